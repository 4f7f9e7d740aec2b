//! Connections to the other members' peer listeners, for forwarding requests to the leader.

use ferrocd_raft::grpc::Channels;
use tonic::transport::Channel;

use crate::error::ServerError;

/// The channels to other members, one per peer URL, made once and kept.
#[derive(Debug, Default, Clone)]
pub struct Peers(Channels);

impl Peers {
    /// Peers reached over `channels`.
    pub fn new(channels: Channels) -> Self {
        Self(channels)
    }

    /// The channel to the member at `urls`.
    ///
    /// # Errors
    /// [`ServerError::LeaderUnreachable`] when none of `urls` can be used.
    pub fn channel(&self, urls: &[String]) -> Result<Channel, ServerError> {
        self.0.channel(urls).map_err(ServerError::LeaderUnreachable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_url_that_cannot_be_used_is_no_storage_failure() {
        let peers = Peers::default();
        for urls in [vec![], vec!["not a url".to_string()]] {
            let e = peers.channel(&urls).unwrap_err();
            assert!(matches!(e, ServerError::LeaderUnreachable(_)), "{e:?}");
            assert_eq!(tonic::Status::from(e).code(), tonic::Code::Unavailable);
        }
    }
}
