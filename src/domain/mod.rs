//! The call domain: values from Finaz, validated to a strict shape before anything uses them.

pub mod answered_url;
pub mod layout;
pub mod originate;
pub mod template;
pub mod values;
