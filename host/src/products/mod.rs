//! Every Infor product shape the host reads or writes, in one place: the
//! paths below `{iu}/{ti}/`, the request bodies and the envelopes inside an
//! HTTP 200 (or 400) that say whether a product accepted a call. Sources
//! and sinks ask these modules; none of them knows Infor's wire formats.

pub mod compass;
pub mod data_lake;
pub mod ido;
pub mod ifs;
pub mod ion;
pub mod m3;
pub mod route;

/// The start of a body, on one line, for an error message.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Why a product refused one record: what goes to the dead letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error(transparent)]
    M3(#[from] m3::M3Error),
    #[error(transparent)]
    Ido(#[from] ido::IdoError),
    /// A product judged by its HTTP status only.
    #[error("{label} answered HTTP {status}: {excerpt}")]
    Status {
        label: String,
        status: u16,
        excerpt: String,
    },
}

/// How a write's answer is read: the product's envelope, or the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Only the HTTP status counts; `label` names the call in errors.
    Status { label: String },
    /// M3 REST: `nrOfFailedTransactions` and `errorMessage` of this transaction.
    M3 { transaction: String },
    /// Mongoose IDO: `Success` and `Message` of an update of this IDO.
    IdoUpdate { ido: String },
}

impl Answer {
    /// Whether the product accepted the call.
    pub fn check(&self, status: u16, body: &[u8]) -> Result<(), ProductError> {
        match self {
            Answer::M3 { transaction } => m3::records(status, body, transaction)
                .map(|_| ())
                .map_err(Into::into),
            Answer::IdoUpdate { ido } => ido::update_result(status, body, ido).map_err(Into::into),
            Answer::Status { .. } if (200..300).contains(&status) => Ok(()),
            Answer::Status { label } => Err(ProductError::Status {
                label: label.clone(),
                status,
                excerpt: excerpt(body),
            }),
        }
    }
}
