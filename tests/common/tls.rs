//! Test certificates: a private CA and a server certificate for 127.0.0.1 / localhost.
