//! Front-end ops of the optim family (see the backend trait).
