//! Rendering a conversation through the model's own Jinja chat template.

use kiln_core::{ChatMessage, KilnError, KilnResult, ToolSpec, ToolSyntax};
use minijinja::{context, Environment, Error, ErrorKind, Value};

/// Used when the GGUF carries no `tokenizer.chat_template`.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const TEMPLATE_NAME: &str = "chat_template";

/// A chat template compiled once at load time.
pub struct ChatTemplate {
    environment: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// How this template's model writes tool calls, if the template teaches it.
    tool_syntax: Option<ToolSyntax>,
}

impl ChatTemplate {
    /// Compiles `source` the way Hugging Face's `apply_chat_template` configures Jinja.
    pub fn compile(source: &str, bos_token: String, eos_token: String) -> KilnResult<Self> {
        let mut environment = Environment::new();
        // transformers renders templates with trim_blocks and lstrip_blocks; templates are written
        // against that whitespace behaviour.
        environment.set_trim_blocks(true);
        environment.set_lstrip_blocks(true);
        // Python string methods (`.strip()`, `.startswith()`, `.items()`) used by many templates.
        environment
            .set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut environment);
        environment.add_function("raise_exception", raise_exception);
        environment
            .add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|error| {
                KilnError::internal(format!(
                    "the model's chat template does not compile: {error}"
                ))
            })?;
        Ok(Self {
            environment,
            bos_token,
            eos_token,
            tool_syntax: ToolSyntax::detect(source),
        })
    }

    pub fn tool_syntax(&self) -> Option<ToolSyntax> {
        self.tool_syntax
    }

    /// Renders `messages` followed by the assistant's generation prompt; `tools` (if any) are
    /// passed as the template's `tools` variable, in the OpenAI / Hugging Face shape.
    pub fn render(&self, messages: &[ChatMessage], tools: &[ToolSpec]) -> KilnResult<String> {
        let tools = if tools.is_empty() {
            Value::from(())
        } else {
            Value::from_serialize(
                tools
                    .iter()
                    .map(ToolSpec::template_value)
                    .collect::<Vec<_>>(),
            )
        };
        let template = self
            .environment
            .get_template(TEMPLATE_NAME)
            .map_err(|error| KilnError::internal(format!("chat template missing: {error}")))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
                tools => tools,
            })
            .map_err(|error| {
                // A template rejecting the conversation (e.g. an unsupported role) is the
                // caller's problem; its own message says what is wrong.
                let detail = error
                    .detail()
                    .map_or_else(|| error.to_string(), str::to_owned);
                KilnError::bad_input(format!("chat template: {detail}"))
            })
    }
}

/// Templates call `raise_exception("...")` to reject conversations they cannot format.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::ErrorKind as KilnErrorKind;

    fn message(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.to_owned(),
            content: content.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn chatml_fallback_renders_turns_and_generation_prompt() {
        let template =
            ChatTemplate::compile(CHATML_TEMPLATE, String::new(), String::new()).unwrap();
        let rendered = template
            .render(
                &[message("system", "Be brief."), message("user", "Hi")],
                &[],
            )
            .unwrap();
        assert_eq!(
            rendered,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_and_special_tokens_work() {
        let source = "{{ bos_token }}{% for m in messages %}{% if m.role.startswith('us') %}\
                      [{{ m.content.strip() }}]{% endif %}{% endfor %}{{ eos_token }}";
        let template = ChatTemplate::compile(source, "<s>".into(), "</s>".into()).unwrap();
        let rendered = template
            .render(&[message("user", "  padded  ")], &[])
            .unwrap();
        assert_eq!(rendered, "<s>[padded]</s>");
    }

    #[test]
    fn raise_exception_becomes_bad_input_with_the_template_message() {
        let source = "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}\
                      {{ raise_exception('Only user and assistant roles are supported!') }}\
                      {% endif %}{% endfor %}";
        let template = ChatTemplate::compile(source, String::new(), String::new()).unwrap();
        let error = template.render(&[message("system", "x")], &[]).unwrap_err();
        assert_eq!(error.kind, KilnErrorKind::BadInput);
        assert!(
            error
                .message
                .contains("Only user and assistant roles are supported!"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_broken_template_fails_at_compile_time() {
        let error =
            ChatTemplate::compile("{% for m in messages %}", String::new(), String::new()).err();
        assert_eq!(error.map(|e| e.kind), Some(KilnErrorKind::Internal));
    }
}
