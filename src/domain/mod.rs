//! The call domain: values from Finaz, validated to a strict shape before anything uses them.

pub mod layout;
pub mod originate;
pub mod values;
