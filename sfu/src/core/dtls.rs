//! DTLS set-up paid once per process instead of once per connection.
//!
//! str0m's aws-lc-rs backend builds a fresh `dimpl::Config` for every `Rtc`,
//! and building one self-tests the crypto provider (an ECDH exchange, an ECDSA
//! verification, hash and AEAD test vectors); each `Rtc` also generates its own
//! certificate (an ECDSA key and a self-signature). Under callgrind that was
//! ~11 M instructions a connection for the self-test and ~1.5 M for the
//! certificate, and a participant has two connections. Here the configuration
//! is built and validated once per MTU and shared (`dimpl::Dtls` takes it as an
//! `Arc` for that), and [`certificate`] makes one certificate per core, as Janus
//! and mediasoup use one per server or worker. Sharing the certificate is
//! safe for the sessions: its key only signs the handshake, and every
//! session's keys come from its own ephemeral ECDH exchange; the fingerprint
//! that clients check travels in the SDP over authenticated signaling.

use std::sync::{Arc, Mutex};
use std::time::Instant;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::crypto::CryptoError;
use str0m::crypto::dtls::{
    DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};

/// str0m's default crypto with the DTLS provider swapped for [`SharedDtls`].
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static DTLS: SharedDtls = SharedDtls {
        configs: Mutex::new(Vec::new()),
    };
    Arc::new(CryptoProvider {
        dtls_provider: &DTLS,
        ..str0m::crypto::from_feature_flags()
    })
}

/// One DTLS certificate for every connection of a core.
pub fn certificate() -> Option<DtlsCert> {
    dimpl::certificate::generate_self_signed_certificate()
        .ok()
        .map(|cert| DtlsCert {
            certificate: cert.certificate,
            private_key: cert.private_key,
        })
}

/// Builds each connection's `dimpl::Dtls` on a configuration validated once.
#[derive(Debug)]
struct SharedDtls {
    /// By MTU (str0m passes its configured one; one entry in practice).
    configs: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>>,
}

impl SharedDtls {
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        // A panic elsewhere while holding the lock leaves a list that is still whole.
        let mut configs = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, config)) = configs.iter().find(|(m, _)| *m == mtu) {
            return Ok(config.clone());
        }
        // As str0m's backend: ICE has checked return routability before DTLS
        // starts, so a server cookie would add a round trip for nothing.
        let mut builder = dimpl::Config::builder().use_server_cookie(false);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config = Arc::new(
            builder
                .build()
                .map_err(|e| CryptoError::Other(format!("DTLS configuration: {e}")))?,
        );
        configs.push((mtu, config.clone()));
        Ok(config)
    }
}

impl DtlsProvider for SharedDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let cert = dimpl::DtlsCertificate {
            certificate: cert.certificate.clone(),
            private_key: cert.private_key.clone(),
        };
        let dtls = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version {other}"
                )));
            }
        };
        Ok(Box::new(Instance(dtls)))
    }
}

/// A `dimpl::Dtls` as str0m drives it.
struct Instance(dimpl::Dtls);

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Instance")
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}
