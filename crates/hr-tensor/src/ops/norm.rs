//! Front-end ops of the norm family (see the backend trait).
