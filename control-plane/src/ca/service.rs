//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: who may obtain
//! which identity, then signing.

use std::sync::Arc;
use std::time::Duration;

use amesh_core::certs::pem as cert_pem;
use amesh_core::identity::Identity;
use amesh_core::xds::proto::istio::ca::istio_certificate_service_server::IstioCertificateService;
use amesh_core::xds::proto::istio::ca::{IstioCertificateRequest, IstioCertificateResponse};
use rcgen::{CertificateSigningRequestParams, SanType};
use rustls::pki_types::CertificateSigningRequestDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::auth::{Authenticator, Caller, CallerRole, bearer_token};
use super::authority::Authority;
use super::metrics::CaMetrics;
use crate::derive::Derived;

/// Metadata a node proxy uses to name the workload it asks for.
const IMPERSONATED_IDENTITY: &str = "impersonatedidentity";

pub struct CaService {
    authority: Arc<Authority>,
    auth: Arc<dyn Authenticator>,
    derived: watch::Receiver<Arc<Derived>>,
    max_ttl: Duration,
    metrics: Arc<CaMetrics>,
}

impl std::fmt::Debug for CaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaService")
            .field("authority", &self.authority)
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

/// A refusal: the status returned and the reason label counted.
struct Refusal {
    reason: &'static str,
    status: Status,
}

fn refuse(reason: &'static str, status: Status) -> Refusal {
    Refusal { reason, status }
}

impl CaService {
    pub fn new(
        authority: Arc<Authority>,
        auth: Arc<dyn Authenticator>,
        derived: watch::Receiver<Arc<Derived>>,
        max_ttl: Duration,
        metrics: Arc<CaMetrics>,
    ) -> Self {
        metrics.set_expiries(authority.root_expiry(), authority.chain_expiry());
        Self {
            authority,
            auth,
            derived,
            max_ttl,
            metrics,
        }
    }

    async fn create(
        &self,
        request: Request<IstioCertificateRequest>,
        caller_out: &mut Option<Caller>,
    ) -> Result<Vec<String>, Refusal> {
        let token = bearer_token(request.metadata()).map_err(|e| {
            self.metrics.authentication_failure_count.inc();
            refuse("unauthenticated", Status::unauthenticated(e.to_string()))
        })?;
        let caller = self.auth.authenticate(token).await.map_err(|e| {
            self.metrics.authentication_failure_count.inc();
            refuse("unauthenticated", Status::unauthenticated(e.to_string()))
        })?;
        *caller_out = Some(caller.clone());
        let impersonated = request
            .metadata()
            .get(IMPERSONATED_IDENTITY)
            .map(|v| v.to_str().map(str::to_owned))
            .transpose()
            .map_err(|_| {
                refuse(
                    "bad_identity",
                    Status::invalid_argument("impersonatedidentity metadata is not ASCII"),
                )
            })?;
        let body = request.into_inner();
        let csr_sans = parse_csr(&body.csr).map_err(|e| {
            self.metrics.csr_parsing_err_count.inc();
            refuse(
                "malformed_csr",
                Status::invalid_argument(format!("malformed CSR: {e}")),
            )
        })?;
        let requested = match impersonated.filter(|s| !s.is_empty()) {
            Some(id) => id,
            None => match csr_sans.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(refuse(
                        "bad_identity",
                        Status::invalid_argument(
                            "the CSR names no identity (URI SAN) and no impersonatedidentity metadata was sent",
                        ),
                    ));
                }
                _ => {
                    return Err(refuse(
                        "bad_identity",
                        Status::invalid_argument(format!(
                            "the CSR names {} identities ({}); one is allowed",
                            csr_sans.len(),
                            csr_sans.join(", ")
                        )),
                    ));
                }
            },
        };
        let identity: Identity = requested.parse().map_err(|e| {
            refuse(
                "bad_identity",
                Status::invalid_argument(format!("requested identity: {e}")),
            )
        })?;
        if let Some(other) = csr_sans.iter().find(|san| **san != requested) {
            return Err(refuse(
                "san_mismatch",
                Status::invalid_argument(format!(
                    "the CSR names {other} but the requested identity is {requested}"
                )),
            ));
        }
        self.authorize(&caller, &identity)?;
        let ttl = match u64::try_from(body.validity_duration) {
            Ok(secs) if secs > 0 => Duration::from_secs(secs).min(self.max_ttl),
            _ => self.max_ttl,
        };
        let der = csr_der(&body.csr).map_err(|e| {
            refuse(
                "malformed_csr",
                Status::invalid_argument(format!("malformed CSR: {e}")),
            )
        })?;
        let chain = self.authority.issue(&identity, &der, ttl).map_err(|e| {
            refuse(
                "internal",
                Status::internal(format!("cannot sign for {identity}: {e}")),
            )
        })?;
        let mut pems: Vec<String> = chain.iter().map(cert_pem::encode_certificate).collect();
        pems.extend(
            self.authority
                .roots()
                .roots()
                .iter()
                .map(cert_pem::encode_certificate),
        );
        Ok(pems)
    }

    /// A node proxy: identities of pods on its node; a workload: its own.
    fn authorize(&self, caller: &Caller, identity: &Identity) -> Result<(), Refusal> {
        match caller.role {
            CallerRole::NodeProxy => {
                let Some(node) = caller.node.as_deref() else {
                    return Err(refuse(
                        "no_node",
                        Status::permission_denied(format!(
                            "caller {caller} has no node, so it may obtain no workload identity"
                        )),
                    ));
                };
                let derived = self.derived.borrow().clone();
                let mut elsewhere: Vec<&str> = Vec::new();
                for workload in derived.model().workloads() {
                    if workload.identity != *identity {
                        continue;
                    }
                    if workload.node == node {
                        return Ok(());
                    }
                    if !elsewhere.contains(&workload.node.as_str()) {
                        elsewhere.push(&workload.node);
                    }
                }
                let message = if elsewhere.is_empty() {
                    format!("identity {identity} has no pod on node {node}")
                } else {
                    format!(
                        "caller is node {node} but identity {identity} runs only on node(s) {}",
                        elsewhere.join(", ")
                    )
                };
                Err(refuse("not_on_node", Status::permission_denied(message)))
            }
            CallerRole::NodeAgent => Err(refuse(
                "wrong_caller",
                Status::permission_denied(format!(
                    "caller {caller} is a node agent; node agents obtain no workload certificates"
                )),
            )),
            CallerRole::Workload => match &caller.identity {
                Some(own) if own == identity => Ok(()),
                Some(own) => Err(refuse(
                    "wrong_caller",
                    Status::permission_denied(format!(
                        "caller {own} may only obtain its own identity, not {identity}"
                    )),
                )),
                None => Err(refuse(
                    "wrong_caller",
                    Status::permission_denied("caller has no identity of its own"),
                )),
            },
        }
    }
}

fn csr_der(pem: &str) -> Result<CertificateSigningRequestDer<'static>, String> {
    CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string())
}

/// The CSR's URI SANs, after checking its structure and signature.
fn parse_csr(pem: &str) -> Result<Vec<String>, String> {
    let der = csr_der(pem)?;
    let params = CertificateSigningRequestParams::from_der(&der).map_err(|e| e.to_string())?;
    params
        .params
        .subject_alt_names
        .iter()
        .map(|san| match san {
            SanType::URI(uri) => Ok(uri.as_str().to_owned()),
            other => Err(format!(
                "SAN {other:?} is not a URI; only the SPIFFE identity is allowed"
            )),
        })
        .collect()
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        self.metrics.csr_count.inc();
        let mut caller = None;
        match self.create(request, &mut caller).await {
            Ok(cert_chain) => {
                self.metrics.success_cert_issuance_count.inc();
                Ok(Response::new(IstioCertificateResponse { cert_chain }))
            }
            Err(Refusal { reason, status }) => {
                self.metrics.refused(reason);
                let caller = caller.map_or_else(|| "unauthenticated".to_owned(), |c| c.to_string());
                tracing::warn!(%caller, reason, message = status.message(), "certificate refused");
                Err(status)
            }
        }
    }
}
