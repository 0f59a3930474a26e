"""Example inputs shipped with gpuslo (SLO specs, a price catalog, a remediation policy):
``gpuslo examples`` lists them and copies them out."""

if __name__ != "gpuslo.examples":  # the folder is gpuslo.examples; one module, one name
    raise ImportError(
        "import gpuslo.examples, not examples: this folder is part of the gpuslo package"
    )
