//! Member and cluster IDs, computed as etcd computes them, so the same flags give the same IDs.

use sha1::{Digest, Sha1};

/// etcd's member ID: the first 8 bytes (big-endian) of SHA-1 over the member's sorted peer URLs
/// joined, followed by the cluster token.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut hasher = Sha1::new();
    hasher.update(urls.concat().as_bytes());
    hasher.update(token.as_bytes());
    first_u64(&hasher.finalize())
}

/// etcd's cluster ID: the first 8 bytes of SHA-1 over the sorted member IDs (8 bytes each,
/// big-endian).
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut hasher = Sha1::new();
    for id in ids {
        hasher.update(id.to_be_bytes());
    }
    first_u64(&hasher.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-1 has 20 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_urls_and_token_only() {
        let a = member_id(&["http://b:2380".into(), "http://a:2380".into()], "tok");
        let b = member_id(&["http://a:2380".into(), "http://b:2380".into()], "tok");
        assert_eq!(a, b, "URL order does not matter");
        assert_ne!(a, member_id(&["http://a:2380".into(), "http://b:2380".into()], "other"));
        assert_eq!(cluster_id(&[1, 2]), cluster_id(&[2, 1]));
        assert_ne!(cluster_id(&[1]), cluster_id(&[2]));
    }
}
