//! (veth tests follow)
