"""Loaders: generic tables, GroupLens and RecBole layouts, the copy inside recbole, cache and download."""

import hashlib
import re
import stat
import time
import zipfile

import pandas as pd
import pytest

from dmpo_trl.data import (
    DATASETS,
    ChecksumError,
    DownloadError,
    InteractionLog,
    load_dataset_by_name,
    load_grouplens,
    load_interactions,
    load_movielens,
    load_recbole_atomic,
    recbole_example_dir,
    register_dataset,
)
from dmpo_trl.data.download import UnsafeArchiveError, fetch_and_extract, safe_extract


def write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


@pytest.fixture
def items_csv(tmp_path):
    return write(tmp_path / "items.csv", "item_id,title\na,Heat (1995)\nb,Fargo (1996)\nc,Babe (1995)\n")


# ---- generic tables ----------------------------------------------------------------------------------------------


def test_load_interactions_sorts_by_time_and_keeps_file_order_on_ties(tmp_path, items_csv):
    inter = write(tmp_path / "inter.csv", "user_id,item_id,timestamp\n10,c,5\n2,b,5\n10,a,5\n10,b,1\n2,a,3\n")
    log = load_interactions(inter, items_csv)
    assert log.sequences == {"2": ["a", "b"], "10": ["b", "c", "a"]}  # users in numeric order; c before a (tie)
    assert log.titles == {"a": "Heat (1995)", "b": "Fargo (1996)", "c": "Babe (1995)"}
    assert log.name == "inter"


def test_load_interactions_tsv_dates_custom_columns_and_parquet(tmp_path):
    write(tmp_path / "i.tsv", "uid\tmovie\twhen\nx\t1\t2020-01-02\nx\t2\t2019-12-31T10:00\n")
    write(tmp_path / "m.tsv", "movie\tname\n1\tOne (2001)\n2\tTwo (2002)\n")
    log = load_interactions(tmp_path / "i.tsv", tmp_path / "m.tsv", "uid", "movie", "when", "name")
    assert log.sequences == {"x": ["2", "1"]}
    pd.DataFrame({"user_id": [1, 1], "item_id": [7, 8], "timestamp": [9.0, 3.0]}).to_parquet(tmp_path / "i.parquet")
    pd.DataFrame({"item_id": [7, 8], "title": ["Seven", "Eight"]}).to_parquet(tmp_path / "m.parquet")
    log = load_interactions(tmp_path / "i.parquet", tmp_path / "m.parquet")
    assert log.sequences == {"1": ["8", "7"]} and log.titles == {"7": "Seven", "8": "Eight"}


def test_load_interactions_min_rating_and_no_time_column(tmp_path, items_csv):
    inter = write(tmp_path / "r.csv", "user_id,item_id,rating\nu,a,5\nu,b,2\nv,c,4\n")
    log = load_interactions(inter, items_csv, time_col=None, rating_col="rating", min_rating=4)
    assert log.sequences == {"u": ["a"], "v": ["c"]}


@pytest.mark.parametrize(
    "inter_text, needle",
    [
        ("user_id,item,timestamp\nu,a,1\n", "missing column 'item_id'"),
        ("user_id,item_id,timestamp\nu,a,1\nu,zzz,2\n", "line 3: item id 'zzz' is not in the item file"),
        ("user_id,item_id,timestamp\nu,a,1\n\n,b,2\n", "line 4: empty user id"),
        ("user_id,item_id,timestamp\nu,a,1\nu,b,yesterday-ish\n", "line 3: cannot parse timestamp 'yesterday-ish'"),
        ("user_id,item_id,timestamp\nu,a,2020-01-01\nu,b,not a date\n", "line 3: cannot parse timestamp"),
        ("user_id,item_id,timestamp\n", "no interactions"),
    ],
)
def test_load_interactions_errors_name_file_and_line(tmp_path, items_csv, inter_text, needle):
    inter = write(tmp_path / "bad.csv", inter_text)
    with pytest.raises(ValueError, match="bad.csv") as info:
        load_interactions(inter, items_csv)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "items_text, needle",
    [
        ("item_id,name\na,Heat\n", "missing column 'title'"),
        ("item_id,title\na,Heat\nb,Fargo\na,Heat again\n", "line 4: item id 'a' appears more than once"),
        ("item_id,title\na,Heat\nb,\n", "line 3: item 'b' has an empty 'title'"),
    ],
)
def test_item_file_errors_name_file_and_line(tmp_path, items_text, needle):
    inter = write(tmp_path / "inter.csv", "user_id,item_id,timestamp\nu,a,1\n")
    items = write(tmp_path / "bad_items.csv", items_text)
    with pytest.raises(ValueError, match="bad_items.csv") as info:
        load_interactions(inter, items)
    assert needle in str(info.value)


def test_parquet_errors_name_the_row(tmp_path):
    pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "q"], "timestamp": [1, 2]}).to_parquet(tmp_path / "i.pq")
    pd.DataFrame({"item_id": ["a"], "title": ["A"]}).to_parquet(tmp_path / "m.pq")
    with pytest.raises(ValueError, match=r"i\.pq, row 2: item id 'q'"):
        load_interactions(tmp_path / "i.pq", tmp_path / "m.pq")


def test_min_rating_that_drops_everything_and_bad_ratings(tmp_path, items_csv):
    inter = write(tmp_path / "r.csv", "user_id,item_id,rating,timestamp\nu,a,1,1\nu,b,x,2\n")
    with pytest.raises(ValueError, match=r"r\.csv, line 3: cannot parse rating 'x'"):
        load_interactions(inter, items_csv, rating_col="rating", min_rating=3)
    write(inter, "user_id,item_id,rating,timestamp\nu,a,1,1\n")
    with pytest.raises(ValueError, match="no interactions with rating >= 3"):
        load_interactions(inter, items_csv, rating_col="rating", min_rating=3)
    with pytest.raises(ValueError, match="missing column 'stars'"):
        load_interactions(inter, items_csv, rating_col="stars", min_rating=3)


# ---- GroupLens and RecBole layouts -------------------------------------------------------------------------------

U_ITEM = "1|Toy Story (1995)|01-Jan-1995||http://x|0|0\n2|Misérables, Les (1995)|01-Jan-1995||http://y|0|1\n"


def grouplens_100k(folder):
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "u.data", "7\t2\t4\t300\n7\t1\t2\t100\n3\t1\t5\t200\n")
    write(folder / "u.item", U_ITEM, encoding="latin-1")
    return folder


def grouplens_1m(folder):
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "ratings.dat", "1::20::5::978300760\n1::10::3::978300700\n2::10::4::978300000\n")
    movies = '10::Cérémonie, La (1995)::Drama\n20::"Great" Escape, The (1963)::Adventure|War\n'
    write(folder / "movies.dat", movies, encoding="latin-1")
    return folder


def test_grouplens_100k_layout(tmp_path):
    log = load_grouplens(grouplens_100k(tmp_path / "ml-100k"))
    assert log.name == "movielens-100k"
    assert log.sequences == {"3": ["1"], "7": ["1", "2"]}
    assert log.titles == {"1": "Toy Story (1995)", "2": "Misérables, Les (1995)"}
    assert load_grouplens(tmp_path / "ml-100k", min_rating=4).sequences == {"3": ["1"], "7": ["2"]}


def test_grouplens_1m_layout_latin1_and_quotes(tmp_path):
    log = load_grouplens(grouplens_1m(tmp_path / "ml-1m"))
    assert log.name == "movielens-1m"
    assert log.sequences == {"1": ["10", "20"], "2": ["10"]}
    assert log.titles["10"] == "Cérémonie, La (1995)" and log.titles["20"] == '"Great" Escape, The (1963)'


def test_grouplens_bad_line_and_wrong_folder(tmp_path):
    folder = grouplens_100k(tmp_path / "ml-100k")
    write(folder / "u.data", "7\t2\t4\t300\n7\t99\t2\t100\n")
    with pytest.raises(ValueError, match=r"u\.data, line 2: item id '99' is not in the item file"):
        load_grouplens(folder)
    with pytest.raises(FileNotFoundError, match="not in GroupLens layout"):
        load_grouplens(tmp_path)


def test_recbole_atomic_files(tmp_path):
    write(
        tmp_path / "toy.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t5\t3\t9\n1\t6\t4\t8\n"
    )
    write(
        tmp_path / "toy.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\n5\tHeat\t1995\n6\tunkonwn\tunkonwn\n",
    )
    log = load_recbole_atomic(tmp_path)
    assert log.sequences == {"1": ["6", "5"]} and log.titles == {"5": "Heat (1995)", "6": "unkonwn"}
    write(tmp_path / "toy.inter", "user_id:token\titem_id:token\n1\t5\n1\t7\n")
    with pytest.raises(ValueError, match=r"toy\.inter, line 3: item id '7'"):
        load_recbole_atomic(tmp_path, "toy")


def test_real_movielens_100k_from_recbole_copy():
    folder = recbole_example_dir("ml-100k")
    if folder is None:
        pytest.skip("recbole is not installed (pip install --no-deps recbole ships MovieLens-100K)")
    log = load_movielens("movielens-100k")
    assert (log.num_users, log.num_items, sum(map(len, log.sequences.values()))) == (943, 1682, 100000)
    assert log.titles["1"] == "Toy Story (1995)"
    assert min(map(len, log.sequences.values())) == 20
    times = pd.read_csv(folder / "ml-100k.inter", sep="\t")
    user_1 = times[times["user_id:token"] == 1]
    stamp = dict(zip(user_1["item_id:token"].astype(str), user_1["timestamp:float"]))
    assert [stamp[i] for i in log.sequences["1"]] == sorted(stamp[i] for i in log.sequences["1"])
    assert load_dataset_by_name("ml-100k").num_users == 943


# ---- resolution order, cache, download ---------------------------------------------------------------------------


def test_data_dir_comes_first_and_accepts_a_parent_folder(tmp_path):
    grouplens_100k(tmp_path / "ml-100k")
    assert load_movielens("movielens-100k", data_dir=tmp_path).num_users == 2  # not the 943 of the recbole copy
    with pytest.raises(FileNotFoundError, match=r"ratings\.dat"):
        load_movielens("movielens-1m", data_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown MovieLens release"):
        load_movielens("movielens-20m", data_dir=tmp_path)


def test_cache_dir_is_used_before_downloading(tmp_path):
    grouplens_1m(tmp_path / "cache" / "ml-1m")
    log = load_movielens("movielens-1m", cache_dir=tmp_path / "cache", download=False)
    assert log.sequences["1"] == ["10", "20"]


def make_zip(tmp_path):
    source = grouplens_1m(tmp_path / "src" / "ml-1m")
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in source.iterdir():
            zf.write(file, f"ml-1m/{file.name}")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_from_file_url_with_checksum(tmp_path):
    archive, md5 = make_zip(tmp_path)
    cache = tmp_path / "cache"
    log = load_movielens("movielens-1m", cache_dir=cache, url=archive.as_uri(), checksum=f"md5:{md5}")
    assert log.sequences == {"1": ["10", "20"], "2": ["10"]}
    assert sorted(p.name for p in cache.iterdir()) == ["ml-1m"]  # archive removed after unpacking
    archive.unlink()  # the second call must not touch the network (or the archive)
    assert load_movielens("movielens-1m", cache_dir=cache, url=archive.as_uri()).num_users == 2


def test_checksum_mismatch_unpacks_nothing(tmp_path):
    archive, _ = make_zip(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="Checksum mismatch.*expected md5 0{32}"):
        load_movielens("movielens-1m", cache_dir=cache, url=archive.as_uri(), checksum="md5:" + "0" * 32)
    assert list(cache.iterdir()) == []
    with pytest.raises(ChecksumError):  # the default checksum is GroupLens's, which this home-made zip fails
        load_movielens("movielens-1m", cache_dir=cache, url=archive.as_uri())


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/ml-1m.zip", "http://files.grouplens.invalid/ml-1m.zip"])
def test_offline_download_fails_fast_and_names_the_alternatives(tmp_path, url):
    start = time.monotonic()
    with pytest.raises(DownloadError, match="data_dir=") as info:
        load_movielens("movielens-1m", cache_dir=tmp_path, url=url, timeout=3)
    assert time.monotonic() - start < 5
    assert "Could not get movielens-1m" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_download_false_names_the_alternatives(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=False.*data_dir="):
        load_movielens("movielens-1m", cache_dir=tmp_path, download=False)


def test_registry(tmp_path):
    assert set(DATASETS) >= {"movielens-100k", "movielens-1m"}
    grouplens_1m(tmp_path / "ml-1m")
    assert load_dataset_by_name("movielens-1m", data_dir=tmp_path).num_users == 2
    with pytest.raises(ValueError, match="Unknown dataset 'netflix'"):
        load_dataset_by_name("netflix")
    register_dataset("toy-test", lambda **kw: InteractionLog({"u": ["a"]}, {"a": "A"}, name="toy"))
    try:
        assert load_dataset_by_name("TOY-TEST").name == "toy"
    finally:
        DATASETS.pop("toy-test")


# ---- archives that try to write outside the cache ----------------------------------------------------------------


def files_under(root):
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.mark.parametrize(
    "member, reason",
    [
        ("{outside}/evil.txt", "is an absolute path"),
        ("../../evil.txt", "climbs out of the folder with '..'"),
        ("ml-1m/../../../evil.txt", "climbs out of the folder with '..'"),
        ("..\\..\\evil.txt", "climbs out of the folder with '..'"),
        ("C:/evil.txt", "is an absolute path"),
        ("ml-1m/link", "is a symbolic link"),
    ],
)
def test_crafted_archive_cannot_write_outside_the_cache(tmp_path, member, reason):
    """Each crafted zip is refused whole, naming the member: nothing is written, in the cache or outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    member = member.format(outside=outside)
    archive = tmp_path / "crafted.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "1::10::5::978300760\n")
        info = zipfile.ZipInfo(member)
        if reason == "is a symbolic link":
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, str(outside) if reason == "is a symbolic link" else "written outside the cache")
    assert zipfile.ZipFile(archive).namelist()[1] == member  # the crafted name is in the archive as written
    cache = tmp_path / "root" / "cache"
    cache.mkdir(parents=True)
    before = files_under(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=re.escape(f"member {member!r} {reason}. Nothing was unpacked.")):
        fetch_and_extract(archive.as_uri(), cache, checksum=None)
    assert list(cache.iterdir()) == []  # no dataset, no temporary folder, and the fetched archive deleted
    assert files_under(tmp_path) == before


def test_safe_extract_takes_ordinary_members(tmp_path):
    """Dots inside names, nested folders and empty directories are not mistaken for escapes."""
    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-1m/notes..v2.txt", "a")
        zf.writestr("ml-1m/.hidden/deep/file.dat", "b")
        zf.writestr("ml-1m/empty/", "")
    with zipfile.ZipFile(archive) as zf:
        safe_extract(zf, tmp_path / "out")
    assert files_under(tmp_path / "out") == [
        "ml-1m",
        "ml-1m/.hidden",
        "ml-1m/.hidden/deep",
        "ml-1m/.hidden/deep/file.dat",
        "ml-1m/empty",
        "ml-1m/notes..v2.txt",
    ]
