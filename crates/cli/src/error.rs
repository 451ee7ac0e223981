//! Errors as the CLI shows them: an API error keeps its stable code and
//! may carry a hint naming the command that fixes it; under `-o json` any
//! failure prints as `{"error": {"code", "message", "hint"}}` on stdout.

use serde::Serialize;

/// An error a base or the controller answered, with its stable code.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The stable snake_case code, e.g. `version_conflict`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// The command that fixes it, when the CLI knows one.
    pub hint: Option<String>,
}

impl ApiError {
    /// The error with `hint` (replacing any other).
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)?;
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

impl From<berth_api::ErrorDetail> for ApiError {
    fn from(e: berth_api::ErrorDetail) -> Self {
        Self {
            code: e.code,
            message: e.message,
            hint: None,
        }
    }
}

/// The API error inside `e`, if it is one.
pub fn api_error(e: &anyhow::Error) -> Option<&ApiError> {
    e.chain().find_map(|cause| cause.downcast_ref::<ApiError>())
}

/// The JSON form of a failure.
#[derive(Debug, Serialize, PartialEq)]
pub struct ErrorJson {
    /// The failure.
    pub error: ErrorFields,
}

/// Code, message and hint of a failure.
#[derive(Debug, Serialize, PartialEq)]
pub struct ErrorFields {
    /// The API's code, or `cli_error` for a failure found by the CLI itself.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// How to fix it, when known.
    pub hint: Option<String>,
}

/// `e` as JSON: the API's code when the failure came from an API, else
/// `cli_error`; the `hint:` lines apart from the message.
pub fn to_json(e: &anyhow::Error) -> ErrorJson {
    let text = format!("{e:#}");
    let mut message = Vec::new();
    let mut hints = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("hint: ") {
            Some(hint) => hints.push(hint),
            None => message.push(line),
        }
    }
    let code = api_error(e).map_or_else(|| "cli_error".to_string(), |a| a.code.clone());
    let mut message = message.join("\n");
    if let Some(stripped) = api_error(e).and_then(|a| {
        message
            .strip_suffix(&format!(" ({})", a.code))
            .map(str::to_string)
    }) {
        message = stripped;
    }
    ErrorJson {
        error: ErrorFields {
            code,
            message,
            hint: (!hints.is_empty()).then(|| hints.join("\n")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_keep_code_message_and_hint_apart() {
        let e = anyhow::Error::new(ApiError {
            code: "version_conflict".into(),
            message: "`a@1` is taken".into(),
            hint: Some("berth deploy --version 1.0.1".into()),
        });
        let json = to_json(&e);
        assert_eq!(json.error.code, "version_conflict");
        assert_eq!(json.error.message, "`a@1` is taken");
        assert_eq!(
            json.error.hint.as_deref(),
            Some("berth deploy --version 1.0.1")
        );
    }

    #[test]
    fn cli_errors_get_a_code_too() {
        let e = anyhow::anyhow!("no base answers at x\nhint: start one with `berth up`");
        let json = to_json(&e);
        assert_eq!(json.error.code, "cli_error");
        assert_eq!(json.error.message, "no base answers at x");
        assert_eq!(
            json.error.hint.as_deref(),
            Some("start one with `berth up`")
        );
    }
}
