"""What crosses a process boundary: topic names, CloudEvents and their data, HTTP bodies."""
