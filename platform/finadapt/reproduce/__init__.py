"""`finadapt reproduce`: the paper's whole study as keyed, resumable steps, and its report."""
