//! SWIM membership around foca.
