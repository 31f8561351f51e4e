//! Front-end ops of the softmax family (see the backend trait).
