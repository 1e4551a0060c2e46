//! Conversation templates. `vicuna_v1` reproduces LLaVA's `conv_vicuna_v1`
//! (llava/conversation.py, `SeparatorStyle.TWO`): the system prompt, then
//! `USER: ... ASSISTANT: ...</s>` turns separated by a space, and a bare
//! `ASSISTANT:` where the model is to answer. `vicuna_v1_no_system` is the same
//! turns without the system prompt: a model trained from nothing (the demo) has
//! no use for it, and learns faster on the shorter sequences
//! (docs/experiments/demo-journal.md). `raw` passes text through.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    VicunaV1,
    VicunaV1NoSystem,
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

const VICUNA_V1_SYSTEM: &str =
    "A chat between a curious user and an artificial intelligence assistant. \
The assistant gives helpful, detailed, and polite answers to the user's questions.";

impl Template {
    /// The template named `name`; the error names it and the choices.
    pub fn from_name(name: &str) -> Result<Self, String> {
        match name {
            "vicuna_v1" => Ok(Template::VicunaV1),
            "vicuna_v1_no_system" => Ok(Template::VicunaV1NoSystem),
            "raw" => Ok(Template::Raw),
            _ => Err(format!(
                "unknown conversation template `{name}` (use one of {})",
                Self::NAMES.join(", ")
            )),
        }
    }

    /// Every template's name.
    pub const NAMES: [&str; 3] = ["vicuna_v1", "vicuna_v1_no_system", "raw"];

    pub fn name(self) -> &'static str {
        match self {
            Template::VicunaV1 => "vicuna_v1",
            Template::VicunaV1NoSystem => "vicuna_v1_no_system",
            Template::Raw => "raw",
        }
    }
}

/// A conversation to render into a prompt; a turn without a message is the
/// one the model is asked to write.
#[derive(Debug, Clone)]
pub struct Conversation {
    template: Template,
    turns: Vec<(Role, Option<String>)>,
}

impl Conversation {
    pub fn new(template: Template) -> Self {
        Conversation {
            template,
            turns: Vec::new(),
        }
    }

    /// The usual single question awaiting an answer.
    pub fn single_turn(template: Template, question: &str) -> Self {
        let mut conv = Conversation::new(template);
        conv.push(Role::User, Some(question.to_string()));
        conv.push(Role::Assistant, None);
        conv
    }

    pub fn push(&mut self, role: Role, message: Option<String>) {
        self.turns.push((role, message));
    }

    pub fn prompt(&self) -> String {
        self.render().text
    }

    /// The turns so far, in order.
    pub fn turns(&self) -> &[(Role, Option<String>)] {
        &self.turns
    }

    pub fn template(&self) -> Template {
        self.template
    }

    /// The prompt text and where the assistant's written answers sit in it,
    /// each with the separator that ends it (`</s>` for vicuna_v1), since
    /// LLaVA trains the model to emit that too.
    pub fn render(&self) -> RenderedConversation {
        let mut text = String::new();
        let mut answer_spans = Vec::new();
        match self.template {
            Template::Raw => {
                for (role, message) in &self.turns {
                    if let Some(m) = message {
                        let start = text.len();
                        text.push_str(m);
                        if *role == Role::Assistant {
                            answer_spans.push(start..text.len());
                        }
                    }
                }
            }
            Template::VicunaV1 | Template::VicunaV1NoSystem => {
                if self.template == Template::VicunaV1 {
                    text.push_str(VICUNA_V1_SYSTEM);
                    text.push(' ');
                }
                for (role, message) in &self.turns {
                    let (name, sep) = match role {
                        Role::User => ("USER", " "),
                        Role::Assistant => ("ASSISTANT", "</s>"),
                    };
                    text.push_str(name);
                    match message {
                        Some(m) => {
                            text.push_str(": ");
                            let start = text.len();
                            text.push_str(m);
                            text.push_str(sep);
                            if *role == Role::Assistant {
                                answer_spans.push(start..text.len());
                            }
                        }
                        None => text.push(':'),
                    }
                }
            }
        }
        RenderedConversation { text, answer_spans }
    }
}

/// A rendered conversation: the prompt text and the byte ranges of the
/// assistant's answers in it (the training targets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedConversation {
    pub text: String,
    pub answer_spans: Vec<std::ops::Range<usize>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vicuna_v1_matches_llava_conv_vicuna_v1() {
        // llava.conversation.conv_vicuna_v1 with ["USER", "What is this?"],
        // ["ASSISTANT", "A cat."], ["USER", "And this?"], ["ASSISTANT", None].
        let mut conv = Conversation::new(Template::VicunaV1);
        conv.push(Role::User, Some("What is this?".into()));
        conv.push(Role::Assistant, Some("A cat.".into()));
        conv.push(Role::User, Some("And this?".into()));
        conv.push(Role::Assistant, None);
        assert_eq!(
            conv.prompt(),
            "A chat between a curious user and an artificial intelligence assistant. The assistant \
             gives helpful, detailed, and polite answers to the user's questions. USER: What is this? \
             ASSISTANT: A cat.</s>USER: And this? ASSISTANT:"
        );
    }

    #[test]
    fn vicuna_v1_no_system_is_vicuna_v1_without_its_system_prompt() {
        let build = |template| {
            let mut conv = Conversation::new(template);
            conv.push(Role::User, Some("What is this?".into()));
            conv.push(Role::Assistant, Some("A cat.".into()));
            conv.push(Role::User, Some("And this?".into()));
            conv.push(Role::Assistant, None);
            conv.render()
        };
        let bare = build(Template::VicunaV1NoSystem);
        assert_eq!(
            bare.text,
            "USER: What is this? ASSISTANT: A cat.</s>USER: And this? ASSISTANT:"
        );
        let full = build(Template::VicunaV1);
        let system = full.text.len() - bare.text.len();
        assert_eq!(&full.text[system..], bare.text);
        let shifted: Vec<_> = bare
            .answer_spans
            .iter()
            .map(|span| span.start + system..span.end + system)
            .collect();
        assert_eq!(shifted, full.answer_spans);
        for name in Template::NAMES {
            assert_eq!(Template::from_name(name).map(Template::name), Ok(name));
        }
        let err = Template::from_name("chatml").unwrap_err();
        assert!(
            err.contains("`chatml`") && err.contains("vicuna_v1_no_system"),
            "{err}"
        );
    }

    #[test]
    fn answer_spans_cover_each_answer_and_its_separator() {
        let mut conv = Conversation::new(Template::VicunaV1);
        conv.push(Role::User, Some("Q1".into()));
        conv.push(Role::Assistant, Some("A cat.".into()));
        conv.push(Role::User, Some("Q2".into()));
        conv.push(Role::Assistant, Some("A dog.".into()));
        let rendered = conv.render();
        let answers: Vec<&str> = rendered
            .answer_spans
            .iter()
            .map(|span| &rendered.text[span.clone()])
            .collect();
        assert_eq!(answers, ["A cat.</s>", "A dog.</s>"]);
        assert!(rendered.text.ends_with("USER: Q2 ASSISTANT: A dog.</s>"));
    }

    #[test]
    fn raw_passes_text_through() {
        assert_eq!(
            Conversation::single_turn(Template::Raw, "Once upon").prompt(),
            "Once upon"
        );
    }
}
