//! Why a command was rejected. Every variant says what was wrong and maps to one stable
//! [`ErrorCode`].

use crate::code::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{field} must be 1..={max}, got {got}")]
    QuantityOutOfRange {
        field: &'static str,
        got: u64,
        max: u32,
    },
    #[error("{field} {rule}")]
    InvalidField { field: &'static str, rule: String },
    #[error("sku {0:?} is not in the catalog")]
    UnknownSku(String),
    #[error("the cart has no line {0}")]
    UnknownLine(u32),
    #[error("the cart has no delivery {0}")]
    UnknownDelivery(u32),
    #[error("no delivery provider {0:?} is configured")]
    UnknownDeliveryProvider(String),
    #[error("no voucher with code {0:?} exists")]
    UnknownVoucherCode(String),
    #[error("the cart has no voucher {0}")]
    UnknownVoucher(u32),
    #[error("the cart has no subscription details {0:?}")]
    UnknownSubscriptionDetails(String),
    #[error("a cart holds at most {max} {what}")]
    LimitExceeded { what: &'static str, max: usize },
    #[error("line {line_id} already belongs to delivery {delivery_id}; remove that delivery first")]
    LineAlreadyDelivered { line_id: u32, delivery_id: u32 },
    #[error("the cart is priced in {cart}, but {sku} is priced in {product}")]
    CurrencyMismatch {
        cart: String,
        sku: String,
        product: String,
    },
    #[error("voucher {code} {reason}")]
    VoucherNotApplicable { code: String, reason: String },
    #[error("the order is placed (reference {0}); the cart can no longer change")]
    OrderPlaced(String),
    #[error(
        "the purchase of provider order {0} is being completed; the cart can change again once \
         it is placed or fails"
    )]
    PurchaseInProgress(String),
    #[error("the purchase cannot be approved ({code}): {reason}")]
    PaymentRefused { code: &'static str, reason: String },
    #[error("{0}")]
    InvalidState(String),
}

impl DomainError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DomainError::QuantityOutOfRange { .. } | DomainError::InvalidField { .. } => {
                ErrorCode::InvalidArgument
            }
            DomainError::UnknownSku(_) => ErrorCode::UnknownSku,
            DomainError::UnknownLine(_) => ErrorCode::UnknownLine,
            DomainError::UnknownDelivery(_) | DomainError::UnknownDeliveryProvider(_) => {
                ErrorCode::UnknownDelivery
            }
            DomainError::UnknownVoucherCode(_) | DomainError::UnknownVoucher(_) => {
                ErrorCode::UnknownVoucher
            }
            DomainError::UnknownSubscriptionDetails(_) => ErrorCode::NotFound,
            DomainError::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            DomainError::VoucherNotApplicable { .. } => ErrorCode::VoucherNotApplicable,
            DomainError::OrderPlaced(_) | DomainError::PurchaseInProgress(_) => {
                ErrorCode::CartLocked
            }
            DomainError::LineAlreadyDelivered { .. }
            | DomainError::CurrencyMismatch { .. }
            | DomainError::PaymentRefused { .. }
            | DomainError::InvalidState(_) => ErrorCode::InvalidState,
        }
    }

    pub(crate) fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        DomainError::InvalidField {
            field,
            rule: rule.into(),
        }
    }
}

impl From<crate::ids::IdError> for DomainError {
    fn from(e: crate::ids::IdError) -> Self {
        DomainError::InvalidField {
            field: e.field,
            rule: format!("{}, got {:?}", e.rule, e.value),
        }
    }
}
