//! Membership: [`Client::member_list`], [`Client::member_add`] (voting or learner),
//! [`Client::member_promote`], [`Client::member_update`], [`Client::member_remove`].
//!
//! ```
//! # let member = ferrocd_test_utils::Member::start(ferrocd_test_utils::Kind::Ferrocd, &[]);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let client = ferrocd_client::Client::connect([member.url()], Default::default()).await?;
//! let added = client.member_add(["http://10.0.0.4:2380"], true).await?;
//! let id = added.member.expect("the new member").id;
//! let members = client.member_list(true).await?.members;
//! assert!(members.iter().any(|m| m.id == id && m.is_learner));
//! // Once the learner has caught up: `client.member_promote(id)`. Or, changing one's mind:
//! client.member_remove(id).await?;
//! # Ok::<(), ferrocd_client::Error>(())
//! # }).unwrap();
//! ```

use ferrocd_proto::etcdserverpb::cluster_client::ClusterClient;
use ferrocd_proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};

use crate::{Client, Repeat, Result};

impl Client {
    /// The members; `linearizable` asks the leader's view rather than the member's own.
    ///
    /// # Errors
    /// An unreachable cluster.
    pub async fn member_list(&self, linearizable: bool) -> Result<MemberListResponse> {
        let request = MemberListRequest { linearizable };
        self.call(request, Repeat::Idempotent, |ch, r| async move { ClusterClient::new(ch).member_list(r).await }).await
    }

    /// Adds a member with these peer URLs, as a learner when `learner`.
    ///
    /// # Errors
    /// etcd's: [`crate::EtcdError::PeerUrlExists`], [`crate::EtcdError::TooManyLearners`],
    /// [`crate::EtcdError::MemberNotEnoughStarted`], [`crate::EtcdError::MemberBadUrls`].
    pub async fn member_add<S: Into<String>>(
        &self,
        peer_urls: impl IntoIterator<Item = S>,
        learner: bool,
    ) -> Result<MemberAddResponse> {
        let request =
            MemberAddRequest { peer_ur_ls: peer_urls.into_iter().map(Into::into).collect(), is_learner: learner };
        self.call(request, Repeat::Once, |ch, r| async move { ClusterClient::new(ch).member_add(r).await }).await
    }

    /// Removes member `id`.
    ///
    /// # Errors
    /// etcd's: [`crate::EtcdError::MemberNotFound`], [`crate::EtcdError::MemberNotEnoughStarted`].
    pub async fn member_remove(&self, id: u64) -> Result<MemberRemoveResponse> {
        let request = MemberRemoveRequest { id };
        self.call(request, Repeat::Once, |ch, r| async move { ClusterClient::new(ch).member_remove(r).await }).await
    }

    /// Replaces member `id`'s peer URLs.
    ///
    /// # Errors
    /// etcd's: [`crate::EtcdError::MemberNotFound`], [`crate::EtcdError::PeerUrlExists`].
    pub async fn member_update<S: Into<String>>(
        &self,
        id: u64,
        peer_urls: impl IntoIterator<Item = S>,
    ) -> Result<MemberUpdateResponse> {
        let request = MemberUpdateRequest { id, peer_ur_ls: peer_urls.into_iter().map(Into::into).collect() };
        self.call(request, Repeat::Idempotent, |ch, r| async move { ClusterClient::new(ch).member_update(r).await })
            .await
    }

    /// Makes learner `id` a voting member.
    ///
    /// # Errors
    /// etcd's: [`crate::EtcdError::MemberNotLearner`], [`crate::EtcdError::LearnerNotReady`].
    pub async fn member_promote(&self, id: u64) -> Result<MemberPromoteResponse> {
        let request = MemberPromoteRequest { id };
        self.call(request, Repeat::Once, |ch, r| async move { ClusterClient::new(ch).member_promote(r).await }).await
    }
}
