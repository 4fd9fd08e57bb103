//! What is wrong with an external input: [`ValidationError`] names the
//! field (`triggers[3].address.prefix_len`) and the problem. Field paths
//! are spelled out only when there is an error to report ([`FieldPath`]),
//! so the success path of validation allocates nothing for them.

/// A field of an external input that was wrong, and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ValidationError {
    /// Path of the field, e.g. `triggers[2].interface.kind`.
    pub field: String,
    pub problem: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Joins a parent field path and a child name.
pub(crate) fn sub(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

/// A field path that is only spelled out when there is an error to report:
/// the success path of validation allocates nothing for it.
pub trait FieldPath {
    fn path(&self) -> String;
}

impl FieldPath for &str {
    fn path(&self) -> String {
        (*self).to_owned()
    }
}

impl FieldPath for String {
    fn path(&self) -> String {
        self.clone()
    }
}

impl FieldPath for &String {
    fn path(&self) -> String {
        (*self).clone()
    }
}

/// `parent.child`, built on demand.
#[derive(Debug, Clone, Copy)]
pub struct Sub<'a>(pub &'a str, pub &'a str);

impl FieldPath for Sub<'_> {
    fn path(&self) -> String {
        sub(self.0, self.1)
    }
}

/// Longest interface name accepted from clients (link identifiers of an MIH
/// function may be longer than the kernel's IFNAMSIZ).
pub const MAX_INTERFACE_NAME: usize = 64;

/// Checks an interface name from outside: bounded, printable.
pub fn check_name(name: &str, field: impl FieldPath) -> Result<(), ValidationError> {
    if name.len() > MAX_INTERFACE_NAME {
        return Err(ValidationError::new(
            field.path(),
            format!("longer than {MAX_INTERFACE_NAME} bytes"),
        ));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ValidationError::new(
            field.path(),
            "contains whitespace or control characters",
        ));
    }
    Ok(())
}
