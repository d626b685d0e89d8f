#!/usr/bin/env python3
"""Writes the fine-tuning set the README's SmolLM2 table was measured on: DIR/train.jsonl (300
chats) and DIR/valid.jsonl (16), each a user asking to extract the fields of a sentence and the
assistant answering with one JSON object, from a fixed seed.

    python3 benches/extraction_chats.py DIR
"""
import json
import os
import random
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
random.seed(1)
names = ["Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy",
         "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter"]
cities = ["Paris", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Oslo", "Dublin",
          "Athens"]


def chat():
    n, c, a = random.choice(names), random.choice(cities), random.randint(18, 80)
    return {"messages": [
        {"role": "user", "content": f"Extract the fields: {n} is {a} years old and lives in {c}."},
        {"role": "assistant", "content": json.dumps({"name": n, "age": a, "city": c})}]}


for name, count in [("train.jsonl", 300), ("valid.jsonl", 16)]:
    with open(os.path.join(out, name), "w") as f:
        f.write("".join(json.dumps(chat()) + "\n" for _ in range(count)))
