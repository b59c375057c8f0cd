//! `istio.workload.zds` messages, written by hand with Istio's field numbers
//! (no protoc at build time). Fields Istio has and we do not (e.g.
//! `AddWorkload.windows_namespace`) are skipped as unknown fields on decode.

/// Protocol version announced by ztunnel in [`ZdsHello`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Version {
    NotUsed = 0,
    V1 = 1,
}

/// First message on a connection, ztunnel → agent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ZdsHello {
    #[prost(enumeration = "Version", tag = "1")]
    pub version: i32,
}

#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct WorkloadInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(string, tag = "3")]
    pub service_account: String,
    // Tag 4 (`trust_domain`) is reserved upstream.
}

/// Sent with the pod's netns fd as ancillary data.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct AddWorkload {
    #[prost(string, tag = "1")]
    pub uid: String,
    #[prost(message, optional, tag = "2")]
    pub workload_info: Option<WorkloadInfo>,
}

/// Before `SnapshotSent` only: keep a workload whose netns the agent no
/// longer has an fd for.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct KeepWorkload {
    #[prost(string, tag = "1")]
    pub uid: String,
}

#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct DelWorkload {
    // Tag 2, not 1: Istio's numbering.
    #[prost(string, tag = "2")]
    pub uid: String,
}

/// The snapshot is complete: ztunnel drops workloads it was not sent.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct SnapshotSent {}

/// Agent → ztunnel.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadRequest {
    #[prost(oneof = "workload_request::Payload", tags = "1, 5, 2, 3")]
    pub payload: Option<workload_request::Payload>,
}

pub mod workload_request {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Payload {
        #[prost(message, tag = "1")]
        Add(super::AddWorkload),
        #[prost(message, tag = "5")]
        Keep(super::KeepWorkload),
        #[prost(message, tag = "2")]
        Del(super::DelWorkload),
        #[prost(message, tag = "3")]
        SnapshotSent(super::SnapshotSent),
    }
}

/// An empty `error` means success.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Ack {
    #[prost(string, tag = "1")]
    pub error: String,
}

/// ztunnel → agent, one per request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadResponse {
    #[prost(oneof = "workload_response::Payload", tags = "1")]
    pub payload: Option<workload_response::Payload>,
}

pub mod workload_response {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Payload {
        #[prost(message, tag = "1")]
        Ack(super::Ack),
    }
}

impl WorkloadRequest {
    pub fn add(uid: impl Into<String>, info: WorkloadInfo) -> Self {
        Self {
            payload: Some(workload_request::Payload::Add(AddWorkload {
                uid: uid.into(),
                workload_info: Some(info),
            })),
        }
    }

    pub fn del(uid: impl Into<String>) -> Self {
        Self {
            payload: Some(workload_request::Payload::Del(DelWorkload {
                uid: uid.into(),
            })),
        }
    }

    pub fn snapshot_sent() -> Self {
        Self {
            payload: Some(workload_request::Payload::SnapshotSent(SnapshotSent {})),
        }
    }
}

impl WorkloadResponse {
    /// `error` empty = success.
    pub fn ack(error: impl Into<String>) -> Self {
        Self {
            payload: Some(workload_response::Payload::Ack(Ack {
                error: error.into(),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    // Expected bytes are what protoc-generated code (Istio's Go and Rust)
    // emits for the same values: tag = field << 3 | wire type.
    #[test]
    fn hello_v1_encodes_as_istio() {
        let hello = ZdsHello {
            version: Version::V1 as i32,
        };
        assert_eq!(hello.encode_to_vec(), [0x08, 0x01]);
        let decoded = ZdsHello::decode(&[0x08, 0x01][..]).unwrap();
        assert_eq!(decoded.version(), Version::V1);
    }

    #[test]
    fn ack_encodes_as_istio() {
        assert_eq!(WorkloadResponse::ack("").encode_to_vec(), [0x0a, 0x00]);
        assert_eq!(
            WorkloadResponse::ack("x").encode_to_vec(),
            [0x0a, 0x03, 0x0a, 0x01, b'x']
        );
    }

    #[test]
    fn requests_encode_as_istio() {
        assert_eq!(
            WorkloadRequest::snapshot_sent().encode_to_vec(),
            [0x1a, 0x00]
        );
        // DelWorkload.uid is field 2 inside field 2.
        assert_eq!(
            WorkloadRequest::del("u").encode_to_vec(),
            [0x12, 0x03, 0x12, 0x01, b'u']
        );
        let keep = WorkloadRequest {
            payload: Some(workload_request::Payload::Keep(KeepWorkload {
                uid: "u".into(),
            })),
        };
        assert_eq!(keep.encode_to_vec(), [0x2a, 0x03, 0x0a, 0x01, b'u']);
        let add = WorkloadRequest::add(
            "u",
            WorkloadInfo {
                name: "n".into(),
                namespace: "s".into(),
                service_account: "a".into(),
            },
        );
        assert_eq!(
            add.encode_to_vec(),
            [
                0x0a, 0x0e, // field 1 (add), 14 bytes
                0x0a, 0x01, b'u', // uid
                0x12, 0x09, // workload_info, 9 bytes
                0x0a, 0x01, b'n', 0x12, 0x01, b's', 0x1a, 0x01, b'a',
            ]
        );
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // AddWorkload with Istio's windows_namespace (field 3) set.
        let bytes = [0x0a, 0x06, 0x0a, 0x01, b'u', 0x1a, 0x01, b'w'];
        let req = WorkloadRequest::decode(&bytes[..]).unwrap();
        match req.payload {
            Some(workload_request::Payload::Add(add)) => assert_eq!(add.uid, "u"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
