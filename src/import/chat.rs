//! Chat templates: a model's own (the Jinja `chat_template` a GGUF file's metadata or a Hugging
//! Face `tokenizer_config.json` carries), rendered by minijinja with the Python string methods
//! such templates call, as `transformers`' `apply_chat_template` renders it; ChatML where a
//! model has none.

use crate::error::{Error, Result};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

/// ChatML (`<|im_start|>role\ncontent<|im_end|>\n`), for a model without a template.
pub const CHATML: &str =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + \
    message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ \
    '<|im_start|>assistant\\n' }}{% endif %}";

impl ChatTemplate {
    /// A template's Jinja source, and the texts of the model's BOS and EOS tokens (which
    /// templates may write).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> ChatTemplate {
        ChatTemplate {
            source: source.into(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        }
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The conversation as the model reads it; `add_generation_prompt` opens the assistant's
    /// turn. A template that does not parse or render is an error quoting minijinja's reason.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let bad = |e: minijinja::Error| Error::Config(format!("the chat template: {e}"));
        env.add_template("chat", &self.source).map_err(bad)?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        env.get_template("chat")
            .map_err(bad)?
            .render(ctx)
            .map_err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders_turns_and_the_generation_prompt() {
        let t = ChatTemplate::new(CHATML, "", "");
        let text = t
            .render(
                &[
                    Message::new("system", "Be brief."),
                    Message::new("user", "Hi"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_and_raise_exception_work_as_in_transformers() {
        let src = "{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}\
            {{ raise_exception('roles are user or assistant') }}{% endif %}{{ bos_token }}\
            [{{ m['role'].upper() }}] {{ m['content'].strip() }}{{ eos_token }}{% endfor %}";
        let t = ChatTemplate::new(src, "<s>", "</s>");
        let ok = t.render(&[Message::new("user", "  hi  ")], false).unwrap();
        assert_eq!(ok, "<s>[USER] hi</s>");
        let err = t
            .render(&[Message::new("tool", "x")], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("roles are user or assistant"), "{err}");
    }
}
