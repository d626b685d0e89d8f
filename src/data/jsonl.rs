//! Fine-tuning data as users keep it (mlx-lm's and axolotl's conventions): a directory with
//! `train.jsonl`, and `valid.jsonl` (and `test.jsonl`) beside it, one JSON object a line, each
//! one of
//!   `{"text": "…"}`                                      plain text, every token trained
//!   `{"prompt": "…", "completion": "…"}`                 a user turn and its answer
//!   `{"messages": [{"role": "…", "content": "…"}, …]}`   a conversation
//! Blank lines are skipped; anything else is refused naming the file and line. Reading only:
//! the records become tokens with a model's tokenizer and chat template in `train::sft`.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One line of a JSONL file.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Text(String),
    Completion {
        prompt: String,
        completion: String,
    },
    /// (role, content) pairs in order.
    Messages(Vec<(String, String)>),
}

/// The splits of a data directory.
pub struct Splits {
    pub train: Vec<Record>,
    /// valid.jsonl, or None where the directory has none.
    pub valid: Option<Vec<Record>>,
    pub dir: PathBuf,
}

/// The file names of the splits.
pub const TRAIN: &str = "train.jsonl";
pub const VALID: &str = "valid.jsonl";

/// Whether `path` is a fine-tuning data directory (it has a train.jsonl).
pub fn is_data_dir(path: &Path) -> bool {
    path.is_dir() && path.join(TRAIN).is_file()
}

/// Reads a data directory's train.jsonl and, where present, valid.jsonl.
pub fn read_dir(dir: &Path) -> Result<Splits> {
    if !is_data_dir(dir) {
        return Err(Error::Data(format!(
            "{}: a fine-tuning data directory needs a {TRAIN} (and a {VALID} to evaluate on)",
            dir.display()
        )));
    }
    let train = read_file(&dir.join(TRAIN))?;
    let valid_path = dir.join(VALID);
    let valid = valid_path
        .is_file()
        .then(|| read_file(&valid_path))
        .transpose()?;
    Ok(Splits {
        train,
        valid,
        dir: dir.into(),
    })
}

/// Every record of one JSONL file (at most [`super::text::text_cap`] bytes); an empty file is
/// an error.
pub fn read_file(path: &Path) -> Result<Vec<Record>> {
    let bytes = crate::files::read_capped(path, super::text::text_cap(), "JSONL data file")?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::Data(format!("{}: is not UTF-8 text: {e}", path.display())))?;
    let mut records = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = parse_line(line)
            .map_err(|reason| Error::Data(format!("{}:{}: {reason}", path.display(), i + 1)))?;
        records.push(record);
    }
    if records.is_empty() {
        return Err(Error::Data(format!("{}: holds no records", path.display())));
    }
    Ok(records)
}

/// One line as a record, or why it is not one.
pub fn parse_line(line: &str) -> std::result::Result<Record, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("is not JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("is not a JSON object (text, prompt/completion or messages)")?;
    let string = |key: &str| -> std::result::Result<String, String> {
        obj.get(key)
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or(format!("{key:?} is not a string"))
    };
    let has = |key: &str| obj.contains_key(key);
    if has("messages") {
        let list = obj["messages"]
            .as_array()
            .ok_or("\"messages\" is not a list")?;
        if list.is_empty() {
            return Err("\"messages\" is empty".into());
        }
        let mut turns = vec![];
        for (j, m) in list.iter().enumerate() {
            let field = |key: &str| -> std::result::Result<String, String> {
                m[key]
                    .as_str()
                    .map(String::from)
                    .ok_or(format!("message {j} has no string {key:?}"))
            };
            turns.push((field("role")?, field("content")?));
        }
        if !turns.iter().any(|(role, _)| role == "assistant") {
            return Err("\"messages\" has no assistant turn to learn".into());
        }
        Ok(Record::Messages(turns))
    } else if has("prompt") || has("completion") {
        Ok(Record::Completion {
            prompt: string("prompt")?,
            completion: string("completion")?,
        })
    } else if has("text") {
        Ok(Record::Text(string("text")?))
    } else {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        Err(format!(
            "has keys {keys:?}; a record has \"text\", \"prompt\" and \"completion\", or \
             \"messages\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_parse_and_bad_lines_say_why() {
        assert_eq!(
            parse_line(r#"{"text": "hi"}"#),
            Ok(Record::Text("hi".into()))
        );
        assert_eq!(
            parse_line(r#"{"prompt": "a", "completion": "b"}"#),
            Ok(Record::Completion {
                prompt: "a".into(),
                completion: "b".into()
            })
        );
        assert_eq!(
            parse_line(
                r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#
            ),
            Ok(Record::Messages(vec![
                ("user".into(), "q".into()),
                ("assistant".into(), "a".into())
            ]))
        );
        for (line, why) in [
            ("{", "is not JSON"),
            ("[1]", "is not a JSON object"),
            (r#"{"prompt": "a"}"#, "\"completion\" is not a string"),
            (r#"{"text": 3}"#, "\"text\" is not a string"),
            (
                r#"{"messages": [{"role": "user"}]}"#,
                "message 0 has no string \"content\"",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "q"}]}"#,
                "no assistant turn",
            ),
            (r#"{"input": "x"}"#, "has keys [\"input\"]"),
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(e.contains(why), "{line}: {e}");
        }
    }
}
