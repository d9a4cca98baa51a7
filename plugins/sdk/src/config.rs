use serde::de::DeserializeOwned;

/// The pipeline manifest's `[config]` table, as the JSON text the host passes to `init`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    json: String,
}

impl Config {
    pub fn new(json: impl Into<String>) -> Self {
        Config { json: json.into() }
    }

    /// The JSON text (`{}` when the manifest has no `[config]`).
    pub fn as_str(&self) -> &str {
        &self.json
    }

    /// Decodes the config into a serde type; the error reads well as `init`'s refusal.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        // An empty string is how a host without a manifest table might say "nothing": treat
        // it as the empty table rather than refusing to start.
        let text = if self.json.trim().is_empty() {
            "{}"
        } else {
            &self.json
        };
        serde_json::from_str(text).map_err(|e| format!("invalid config: {e}"))
    }
}
