use super::MAX_MESSAGE_SIZE;

#[derive(Debug, thiserror::Error)]
pub enum ZdsError {
    #[error("ZDS socket: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection (orderly EOF).
    #[error("ZDS peer closed the connection")]
    Closed,
    #[error("ZDS message does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("ZDS message of {0} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit")]
    TooLarge(usize),
    #[error("ZDS protocol violation: {0}")]
    Protocol(String),
}
