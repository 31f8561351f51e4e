//! Front-end ops of the layout family (see the backend trait).
