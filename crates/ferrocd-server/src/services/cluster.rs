//! etcd's Cluster service: MemberList, MemberAdd, MemberRemove, MemberUpdate, MemberPromote.
//!
//! Membership is Raft's: the member set and peer URLs are the Raft membership, names and
//! client URLs are the attributes each member publishes through the log once it starts.
//! Changes are made by the leader (a follower forwards them), one at a time. etcd's MemberAdd
//! of a voter maps to adding a learner and promoting it, each one committed change.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ferrocd_engine::Engine;
use ferrocd_proto::etcdserverpb::cluster_client::ClusterClient;
use ferrocd_proto::etcdserverpb::cluster_server::Cluster;
use ferrocd_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use super::Shared;
use crate::config::parse_url;
use crate::error::ServerError;
use crate::ids;

/// etcd's `--max-learners` default.
const MAX_LEARNERS: usize = 1;

/// The Cluster service.
#[derive(Debug)]
pub struct ClusterService<E: Engine>(pub Arc<Shared<E>>);

/// What `--strict-reconfig-check` judges a change by: the voters, which of them have started
/// (published their name) and which the leader has heard from lately.
struct Quorum {
    voters: Vec<u64>,
    started: BTreeSet<u64>,
    active: BTreeSet<u64>,
}

impl Quorum {
    fn started_voters(&self, except: Option<u64>) -> (usize, usize) {
        let counted = self.voters.iter().filter(|id| Some(**id) != except);
        let members = counted.clone().count();
        (members, counted.filter(|id| self.started.contains(id)).count())
    }

    /// Whether every voter is up.
    fn all_active(&self) -> bool {
        self.voters.iter().all(|id| self.active.contains(id))
    }

    /// etcd's rules for adding a voter: with the newcomer, a quorum must be started (a lone
    /// started member may take a second); and every voter must be up.
    fn may_add_voter(&self) -> Result<(), ServerError> {
        let (members, started) = self.started_voters(None);
        let (members, lone) = (members + 1, started == 1 && members == 1);
        if !lone && started < members / 2 + 1 {
            return Err(ServerError::NotEnoughStartedMembers);
        }
        if self.all_active() { Ok(()) } else { Err(ServerError::UnhealthyCluster) }
    }

    /// etcd's rules for promoting a learner: as adding a voter, counting the learner as started.
    fn may_promote(&self) -> Result<(), ServerError> {
        let (members, started) = self.started_voters(None);
        let (members, started) = (members + 1, started + 1);
        if started < members / 2 + 1 {
            return Err(ServerError::NotEnoughStartedMembers);
        }
        if self.all_active() { Ok(()) } else { Err(ServerError::UnhealthyCluster) }
    }

    /// etcd's rules for removing voter `id`: the started others must be a quorum of the others;
    /// a voter that is down may go; otherwise the active others must be a quorum of today's voters.
    fn may_remove_voter(&self, id: u64, me: u64) -> Result<(), ServerError> {
        let (members, started) = self.started_voters(Some(id));
        if started < members / 2 + 1 {
            return Err(ServerError::NotEnoughStartedMembers);
        }
        if id != me && !self.active.contains(&id) {
            return Ok(());
        }
        let active = self.voters.iter().filter(|v| self.active.contains(v)).count();
        if active - 1 < 1 + (self.voters.len() - 1) / 2 { Err(ServerError::UnhealthyCluster) } else { Ok(()) }
    }
}

impl<E: Engine> ClusterService<E> {
    /// Every member, voters then learners, by ID within each.
    fn members(&self) -> Result<Vec<Member>, Status> {
        let status = self.0.replica.status();
        let attrs = self.0.replica.member_attrs()?;
        let member = |(id, node): (&u64, &crate::replica::Node), learner: bool| {
            let a = attrs.get(id);
            Member {
                id: *id,
                name: a.map(|a| a.name.clone()).unwrap_or_default(),
                peer_ur_ls: node.urls.clone(),
                client_ur_ls: a.map(|a| a.client_urls.clone()).unwrap_or_default(),
                is_learner: learner,
            }
        };
        let mut out: Vec<Member> = status.members.voters.iter().map(|m| member(m, false)).collect();
        out.extend(status.members.learners.iter().map(|m| member(m, true)));
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    /// The facts `--strict-reconfig-check` needs; none when the check is off.
    fn quorum(&self) -> Result<Option<Quorum>, Status> {
        if !self.0.strict_reconfig_check {
            return Ok(None);
        }
        let status = self.0.replica.status();
        let attrs = self.0.replica.member_attrs()?;
        let started = attrs.iter().filter(|(_, a)| !a.name.is_empty()).map(|(id, _)| *id).collect();
        // Served at the leader (requests are forwarded to it); a member that lost the lead
        // meanwhile knows of no one active, and the change fails as unhealthy.
        let active = self.0.replica.active_members(self.0.replica.election_timeout()).unwrap_or_default();
        Ok(Some(Quorum { voters: status.members.voters.keys().copied().collect(), started, active }))
    }

    fn header(&self) -> Option<ferrocd_proto::etcdserverpb::ResponseHeader> {
        self.0.header(self.0.kv.current_revision())
    }

    fn check_urls(urls: &[String]) -> Result<(), Status> {
        if urls.is_empty() || urls.iter().any(|u| parse_url("peerURLs", u).is_err()) {
            return Err(ServerError::InvalidPeerUrls.into());
        }
        Ok(())
    }

    /// Refuses peer URLs another member (other than `except`) already has.
    fn check_unique(&self, urls: &[String], except: Option<u64>) -> Result<(), Status> {
        let status = self.0.replica.status();
        let taken = status
            .members
            .voters
            .iter()
            .chain(&status.members.learners)
            .filter(|(id, _)| Some(**id) != except)
            .any(|(_, node)| node.urls.iter().any(|u| urls.contains(u)));
        if taken { Err(ServerError::PeerUrlExists.into()) } else { Ok(()) }
    }
}

#[tonic::async_trait]
impl<E: Engine> Cluster for ClusterService<E> {
    async fn member_add(&self, request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        // Membership changes are root's (MemberList is open).
        self.0.admin(&request)?;
        if let Some(mut resp) =
            self.0.forward(&request, &async |c, r| ClusterClient::new(c).member_add(r).await).await?
        {
            self.0.fill(&mut resp.header);
            return Ok(Response::new(resp));
        }
        let req = request.into_inner();
        Self::check_urls(&req.peer_ur_ls)?;
        if !req.is_learner
            && let Some(quorum) = self.quorum()?
        {
            quorum.may_add_voter()?;
        }
        self.check_unique(&req.peer_ur_ls, None)?;
        let status = self.0.replica.status();
        if req.is_learner && status.members.learners.len() >= MAX_LEARNERS {
            return Err(ServerError::TooManyLearners.into());
        }
        // etcd derives a new member's ID from its peer URLs, the cluster token and the time.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let id = ids::member_id(&req.peer_ur_ls, &format!("{}{now}", self.0.cluster_token));
        if status.members.voters.contains_key(&id) || status.members.learners.contains_key(&id) {
            return Err(ServerError::MemberIdExists.into());
        }
        self.0.replica.add_learner(id, req.peer_ur_ls.clone()).await?;
        if !req.is_learner {
            // Joint consensus commits the new configuration only with a majority of it: adding a
            // voter to a one-member cluster needs the new member to run. Answer once the change
            // is in effect on this member, as etcd answers once its conf change is applied; the
            // promotion completes in the background when the new member starts.
            let replica = self.0.replica.clone();
            tokio::spawn(async move {
                if let Err(e) = replica.promote_eventually(id).await {
                    tracing::warn!(member = %format!("{id:x}"), error = %e, "adding the member as a voter failed");
                }
            });
            self.0
                .replica
                .wait_until(self.0.request_timeout, |s| s.members.voters.contains_key(&id))
                .await
                .ok_or(ServerError::Timeout)?;
        }
        let members = self.members()?;
        let member = Member { id, peer_ur_ls: req.peer_ur_ls, is_learner: req.is_learner, ..Member::default() };
        Ok(Response::new(MemberAddResponse { header: self.header(), member: Some(member), members }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        // Membership changes are root's (MemberList is open).
        self.0.admin(&request)?;
        if let Some(mut resp) =
            self.0.forward(&request, &async |c, r| ClusterClient::new(c).member_remove(r).await).await?
        {
            self.0.fill(&mut resp.header);
            return Ok(Response::new(resp));
        }
        let id = request.into_inner().id;
        if self.0.replica.status().members.voters.contains_key(&id)
            && let Some(quorum) = self.quorum()?
        {
            quorum.may_remove_voter(id, self.0.member_id)?;
        }
        self.0.replica.remove(id).await?;
        Ok(Response::new(MemberRemoveResponse { header: self.header(), members: self.members()? }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        // Membership changes are root's (MemberList is open).
        self.0.admin(&request)?;
        if let Some(mut resp) =
            self.0.forward(&request, &async |c, r| ClusterClient::new(c).member_update(r).await).await?
        {
            self.0.fill(&mut resp.header);
            return Ok(Response::new(resp));
        }
        let req = request.into_inner();
        Self::check_urls(&req.peer_ur_ls)?;
        self.check_unique(&req.peer_ur_ls, Some(req.id))?;
        self.0.replica.update(req.id, req.peer_ur_ls).await?;
        Ok(Response::new(MemberUpdateResponse { header: self.header(), members: self.members()? }))
    }

    async fn member_list(&self, request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        self.0.not_learner()?;
        if request.into_inner().linearizable {
            self.0.read_barrier().await?;
        }
        Ok(Response::new(MemberListResponse { header: self.header(), members: self.members()? }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        // Membership changes are root's (MemberList is open).
        self.0.admin(&request)?;
        if let Some(mut resp) =
            self.0.forward(&request, &async |c, r| ClusterClient::new(c).member_promote(r).await).await?
        {
            self.0.fill(&mut resp.header);
            return Ok(Response::new(resp));
        }
        let id = request.into_inner().id;
        let status = self.0.replica.status();
        if status.members.voters.contains_key(&id) {
            return Err(ServerError::MemberNotLearner.into());
        }
        if !status.members.learners.contains_key(&id) {
            return Err(ServerError::MemberNotFound.into());
        }
        // etcd promotes a learner only once its log is within 10% of the leader's.
        let matched = status.matched.get(&id).copied().unwrap_or(0);
        if (matched as f64) < status.last_log_index as f64 * 0.9 {
            return Err(ServerError::LearnerNotReady.into());
        }
        if let Some(quorum) = self.quorum()? {
            quorum.may_promote()?;
        }
        self.0.replica.promote(id).await?;
        Ok(Response::new(MemberPromoteResponse { header: self.header(), members: self.members()? }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quorum(voters: &[u64], started: &[u64], active: &[u64]) -> Quorum {
        Quorum {
            voters: voters.to_vec(),
            started: started.iter().copied().collect(),
            active: active.iter().copied().collect(),
        }
    }

    fn message(result: Result<(), ServerError>) -> String {
        result.err().map(|e| Status::from(e).message().to_string()).unwrap_or_default()
    }

    const NOT_STARTED: &str = "etcdserver: re-configuration failed due to not enough started members";
    const UNHEALTHY: &str = "etcdserver: unhealthy cluster";

    #[test]
    fn adding_a_voter_needs_a_started_quorum_and_every_voter_up() {
        // A lone member may take a second voter (to restore a cluster from it).
        assert_eq!(message(quorum(&[1], &[1], &[1]).may_add_voter()), "");
        // With that second one not started, a third would leave 1 started of 3.
        assert_eq!(message(quorum(&[1, 2], &[1], &[1]).may_add_voter()), NOT_STARTED);
        assert_eq!(message(quorum(&[1, 2, 3], &[1, 2, 3], &[1, 2, 3]).may_add_voter()), "");
        assert_eq!(message(quorum(&[1, 2, 3], &[1, 2], &[1, 2, 3]).may_add_voter()), NOT_STARTED);
        assert_eq!(message(quorum(&[1, 2, 3], &[1, 2, 3], &[1, 2]).may_add_voter()), UNHEALTHY);
    }

    #[test]
    fn promoting_counts_the_learner_as_started() {
        assert_eq!(message(quorum(&[1], &[1], &[1]).may_promote()), "");
        assert_eq!(message(quorum(&[1, 2, 3], &[1], &[1, 2, 3]).may_promote()), NOT_STARTED);
        assert_eq!(message(quorum(&[1, 2, 3], &[1, 2], &[1, 2, 3]).may_promote()), "");
        assert_eq!(message(quorum(&[1, 2, 3], &[1, 2, 3], &[1, 3]).may_promote()), UNHEALTHY);
    }

    #[test]
    fn removing_a_voter_must_leave_an_active_quorum() {
        let all_up = quorum(&[1, 2, 3], &[1, 2, 3], &[1, 2, 3]);
        assert_eq!(message(all_up.may_remove_voter(3, 1)), "");
        // A member that is down may always go; an active one not while another is down.
        let one_down = quorum(&[1, 2, 3], &[1, 2, 3], &[1, 2]);
        assert_eq!(message(one_down.may_remove_voter(3, 1)), "");
        assert_eq!(message(one_down.may_remove_voter(2, 1)), UNHEALTHY);
        assert_eq!(message(one_down.may_remove_voter(1, 1)), UNHEALTHY);
        // The others must have a started quorum among them.
        assert_eq!(message(quorum(&[1, 2], &[1], &[1, 2]).may_remove_voter(1, 1)), NOT_STARTED);
        assert_eq!(message(quorum(&[1, 2, 3], &[1], &[1, 2, 3]).may_remove_voter(2, 1)), NOT_STARTED);
    }
}
