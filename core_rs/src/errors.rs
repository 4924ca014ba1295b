//! Errors for input the core refuses. Business refusals are not errors: they are decisions
//! carrying reason codes (see `decision`).

use thiserror::Error;

/// Which input was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The book: instruments, mandates, accounts, limits or prices.
    Book,
    /// A block order, fill or price update.
    Order,
}

/// An input the core cannot act on, with the path of the offending field when known.
#[derive(Debug, Clone, Error)]
#[error("{message}")]
pub struct CoreError {
    pub kind: ErrorKind,
    pub message: String,
    pub loc: Vec<String>,
}

impl CoreError {
    pub fn book(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Book, message: message.into(), loc: Vec::new() }
    }

    pub fn order(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Order, message: message.into(), loc: Vec::new() }
    }

    /// Adds the field path, outermost first.
    pub fn at<I, S>(mut self, loc: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.loc = loc.into_iter().map(Into::into).collect();
        self
    }
}

pub type CoreResult<T> = Result<T, CoreError>;
