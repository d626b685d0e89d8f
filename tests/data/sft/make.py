"""Writes train.jsonl and valid.jsonl (see README.md). Run: python3 make.py"""
import json
import random

random.seed(7)
words = ["cat", "dog", "sun", "tree", "fish", "bird", "moon", "star"]


def rec():
    a, b = random.sample(words, 2)
    return {"messages": [{"role": "user", "content": f"{a} and {b}?"},
                         {"role": "assistant", "content": f"{b} then {a}"}]}


lines = [json.dumps(rec()) for _ in range(46)]
lines.insert(3, json.dumps({"prompt": "sun and moon?", "completion": "moon then sun"}))
lines.insert(9, json.dumps({"text": "the cat sat"}))
open("train.jsonl", "w").write("\n".join(lines) + "\n\n")
open("valid.jsonl", "w").write("".join(json.dumps(rec()) + "\n" for _ in range(8)))
