pub mod images;
pub mod reference;
