import torch

from dmpo_trl import DataCollatorForMultiPreference


def test_k1_layout_matches_trl():
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    rows = [
        {"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6]},
        {"prompt_ids": [7, 8], "chosen_ids": [9], "rejected_ids": [10, 11]},
    ]
    trl_batch = DataCollatorForPreference(pad_token_id=0, max_length=4)(rows)
    ours = DataCollatorForMultiPreference(pad_token_id=0, max_length=4)(
        [{**row, "rejected_ids": [row["rejected_ids"]]} for row in rows]
    )
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(trl_batch[key], ours[key]), key
    assert ours["num_rejected"].tolist() == [1, 1]


def test_mixed_k_and_reference_logps():
    rows = [
        {
            "prompt_ids": [1],
            "chosen_ids": [2],
            "rejected_ids": [[3], [4, 5], [6]],
            "ref_chosen_logps": -1.0,
            "ref_rejected_logps": [-2.0, -3.0, -4.0],
        },
        {
            "prompt_ids": [7, 8],
            "chosen_ids": [9, 9],
            "rejected_ids": [[10]],
            "ref_chosen_logps": -5.0,
            "ref_rejected_logps": [-6.0, 0.0, 0.0],
        },  # padded to the dataset's largest K
    ]
    batch = DataCollatorForMultiPreference(pad_token_id=0)(rows)
    assert batch["input_ids"].shape == (2 + 4, 4)
    assert batch["num_rejected"].tolist() == [3, 1]
    assert batch["input_ids"][2].tolist() == [1, 3, 0, 0]  # row 0, rejected 0
    assert batch["input_ids"][5].tolist() == [7, 8, 10, 0]  # row 1, rejected 0
    assert batch["completion_mask"][3].tolist() == [0, 1, 1, 0]
    assert batch["ref_rejected_logps"].tolist() == [-2.0, -3.0, -4.0, -6.0]


def test_truncates_each_sequence_to_max_length():
    rows = [{"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5, 6], "rejected_ids": [[7], [8, 9, 10, 11]]}]
    batch = DataCollatorForMultiPreference(pad_token_id=0, max_length=5)(rows)
    assert batch["input_ids"].shape[1] == 5
    assert batch["input_ids"][2].tolist() == [1, 2, 3, 8, 9]
    assert batch["completion_mask"][2].tolist() == [0, 0, 0, 1, 1]
