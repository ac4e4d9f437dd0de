//! Values that enter the domain only through their parsers, and the password hasher.

mod display_name;
mod email;
mod password;
mod secret;

pub use display_name::DisplayName;
pub use email::Email;
pub use password::{HashError, Password, PasswordHasher, WeakPassword};
pub use secret::OpaqueToken;
