//! The crate's error boundary: [`Error`] wraps the error enum of each module, and
//! [`ConfigError`] is shared by every configuration check.
//!
//! Each module returns its own enum (the shell usually matches on one of them: a
//! [`crate::writer::AppendError::NeedRoll`] is routine, a [`crate::commit::CommitError`] after a
//! failed sync stops the node). Every variant carries the limit and the value that broke it.

use crate::commit::CommitError;
use crate::dedup::DedupError;
use crate::msg_id::MsgIdError;
use crate::record::EncodeError;
use crate::recovery::RecoveryError;
use crate::segments::SegmentError;
use crate::writer::AppendError;

/// A configuration value outside what this crate accepts. Raised at construction, never later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `field` must lie in `min..=max`.
    #[error("config `{field}` is {value}, allowed {min}..={max}")]
    OutOfRange {
        /// Name of the offending field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// `field` must be a multiple of `multiple`.
    #[error("config `{field}` is {value}, must be a multiple of {multiple}")]
    NotMultiple {
        /// Name of the offending field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The required divisor.
        multiple: u64,
    },
}

impl ConfigError {
    /// Checks `min <= value <= max`.
    pub(crate) fn check_range(
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    ) -> Result<(), ConfigError> {
        if value < min || value > max {
            return Err(ConfigError::OutOfRange {
                field,
                value,
                min,
                max,
            });
        }
        Ok(())
    }

    /// Checks `value % multiple == 0` (`multiple` is a non-zero constant).
    pub(crate) fn check_multiple(
        field: &'static str,
        value: u64,
        multiple: u64,
    ) -> Result<(), ConfigError> {
        if !value.is_multiple_of(multiple) {
            return Err(ConfigError::NotMultiple {
                field,
                value,
                multiple,
            });
        }
        Ok(())
    }
}

/// Any error of this crate, for callers that propagate rather than match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A configuration value was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A record or segment header could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// An append or roll was refused by the writer.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// Recovery found the log inconsistent.
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    /// The group-commit machine refused an input or has failed.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// The segment tracker refused an input.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// The dedup window refused an input or a snapshot.
    #[error(transparent)]
    Dedup(#[from] DedupError),
    /// The msg_id allocator refused an input.
    #[error(transparent)]
    MsgId(#[from] MsgIdError),
}
