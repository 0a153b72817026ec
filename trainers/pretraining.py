"""The pre-training mix: blocks of ordinary code that LeTI's optimizer steps alternate with, so the
model keeps its general ability (the authors used 50,000 Python files of The Stack v1.1)."""

from __future__ import annotations

import os
from pathlib import Path

from .leti_config import LetiConfig


def build_pretraining_blocks(args: LetiConfig, tokenizer, folder: str | os.PathLike) -> None:
    """Write the blocks of ``pretrain_block_size`` tokens of ``args.pretrain_dataset`` to ``folder``
    (``save_to_disk``: int32 ``input_ids`` and ``labels``), as the authors built them: the first
    ``pretrain_max_documents`` documents, ``train_test_split(pretrain_test_size, seed=42)``'s train
    part, tokenized, concatenated and cut. The token stream never lives in Python lists."""
    import datasets
    import numpy as np
    from datasets.arrow_writer import ArrowWriter

    source = args.pretrain_dataset
    if Path(source, "dataset_info.json").exists():
        data = datasets.load_from_disk(source)
    else:  # streamed, so a corpus the size of The Stack is never downloaded whole
        data = datasets.load_dataset(source, data_dir=args.pretrain_data_dir, split="train", streaming=True,
                                     **({"revision": args.pretrain_revision} if args.pretrain_revision else {}))
    field_name = args.pretrain_text_field
    texts = []
    for count, example in enumerate(data):
        if args.pretrain_max_documents is not None and count >= args.pretrain_max_documents:
            break
        if field_name not in example:
            raise ValueError(f"pre-training dataset {source!r} has no column {field_name!r} "
                             f"(columns: {sorted(example)}); set `pretrain_text_field`.")
        texts.append(example[field_name])
    documents = datasets.Dataset.from_dict({"text": texts})
    del texts
    if args.pretrain_test_size and len(documents) > 1:  # the authors' split, which also shuffles
        documents = documents.train_test_split(test_size=args.pretrain_test_size, seed=42)["train"]
    size = args.pretrain_block_size or args.max_length or 1024
    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32")),
                                  "labels": datasets.Sequence(datasets.Value("int32"))})
    scratch = Path(folder).with_name(Path(folder).name + ".arrow")
    writer = ArrowWriter(features=features, path=str(scratch))
    stream, made = np.zeros(0, dtype=np.int32), 0
    try:
        for start in range(0, len(documents), 256):
            ids = tokenizer(documents[start:start + 256]["text"], add_special_tokens=False)["input_ids"]
            stream = np.concatenate([stream, *(np.asarray(i, dtype=np.int32) for i in ids)])
            whole = len(stream) // size
            if args.pretrain_max_blocks:
                whole = min(whole, args.pretrain_max_blocks - made)
            if whole:
                cut = stream[: whole * size].reshape(whole, size)
                writer.write_batch({"input_ids": list(cut), "labels": list(cut)})
                made += whole
                stream = stream[whole * size:]
            if args.pretrain_max_blocks and made >= args.pretrain_max_blocks:
                break
        writer.finalize()
    finally:
        writer.close()
    try:
        if not made:
            raise ValueError(f"pre-training dataset {source!r} has fewer than {size} tokens; lower `pretrain_block_size`.")
        datasets.Dataset.from_file(str(scratch)).save_to_disk(str(folder))
    finally:
        scratch.unlink(missing_ok=True)
