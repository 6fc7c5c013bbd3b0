"""A run over records with stored copies says, per stage, which stored sizes it read."""

import json

import numpy as np
import pandas as pd
from PIL import Image


def test_stage_table_and_history_name_the_stored_sizes_each_stage_reads(
    tmp_path, capsys, make_config
):
    from kerastricks.train import train
    from tfrecords_tools import write_records

    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        image = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(image).resize((128, 96)).save(tmp_path / f"p{i}.jpg", quality=90)
        rows.append({"path": f"p{i}.jpg", "label": i % 2})
    pd.DataFrame(rows).to_csv(tmp_path / "photos.csv", index=False)
    records = str(tmp_path / "records")
    write_records(
        records, csv=str(tmp_path / "photos.csv"), folds=2, sizes=[32, 48], progress=False
    )
    stages = [
        {"name": "small", "epochs": 1, "image_size": 24, "lr": 1e-3},
        {"name": "full", "epochs": 1, "image_size": 64, "lr": 1e-3},
    ]
    config = make_config(
        data={"records": records, "val_fold": 0, "resize": "squash"},
        train={"batch_size": 4, "steps_per_epoch": 1, "validation_steps": 1, "stages": stages},
    )
    result = train(config)
    history = pd.read_csv(f"{result.run_dir}/history.csv")
    assert list(history["stored_sizes"].astype(str)) == ["32", "full"]
    summary = json.loads(open(f"{result.run_dir}/summary.json").read())
    assert [s["stored_sizes"] for s in summary["stages"]] == ["32", "full"]
    table = capsys.readouterr().out.split("read from")[-1]
    assert [line.split()[-1] for line in table.strip().splitlines()[:2]] == ["32", "full"]
