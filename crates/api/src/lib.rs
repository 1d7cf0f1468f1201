//! SidecarPolicy API (sidecars.dev/v1alpha1): types, constants and CRD generation.
