"""The product vocabulary that crosses service boundaries (SPEC 2.4): the SW-OPT features."""

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
