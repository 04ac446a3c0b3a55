"""The product vocabulary that crosses service boundaries: SKUs and software features (SPEC 2.2-2.5)."""

SKUS = (
    "CI-QTY", "CI-ANNUAL", "AI-QTY", "AI-PERPETUAL", "SW-BASIC", "SW-OPT",
    "SVC-DELIVERY", "SVC-SCHEDULED", "SVC-MAINTENANCE",
)

# SW-BASIC, the Basic Edition: mandatory and indivisible.
BASIC_EDITION_MODULES = (
    "inspection_management", "report_management", "image_browsing", "hospital_management",
    "doctor_management", "cloud_film_configuration", "data_management", "log_audit",
)

# SW-OPT `feature` values.
OPTIONAL_FEATURES = (
    "cloud_film",
    "advanced_viewer",
    "remote_diagnosis",
    "remote_consultation",
    "remote_ward_rounds",
    "remote_teaching",
    "data_statistics",
    "image_quality_control",
    "mobile_terminal",
    "follow_up",
)
