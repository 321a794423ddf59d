//! TEMPORARY STUB (replaced by the real module)
use serde_json::Value;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Namespace,
    Pod,
    Job,
    ConfigMap,
    Secret,
    ServiceAccount,
    Event,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Strict,
    #[default]
    Warn,
    Ignore,
}
impl FieldValidation {
    pub fn parse(_q: &str) -> Result<Self, String> {
        Ok(Self::Warn)
    }
}
pub fn unknown_fields(_kind: Kind, _obj: &Value) -> Result<Vec<String>, String> {
    Ok(vec![])
}
pub fn strict_error_message(_u: &[String]) -> String {
    String::new()
}
pub fn strip_unknown(_kind: Kind, _obj: &mut Value) {}
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}
pub fn validate(_kind: Kind, _obj: &Value, _old: Option<&Value>) -> Vec<Cause> {
    vec![]
}
pub fn invalid_message(_kind: Kind, _name: &str, _causes: &[Cause]) -> String {
    String::new()
}
pub fn quantity_milli_value(_q: &str) -> Option<i128> {
    None
}
