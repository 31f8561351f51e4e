//! Front-end ops of the conv family (see the backend trait).
