"""Worked solutions of the notebook exercises, one module per notebook (`show_solution(key)` prints
one; CI runs the notebooks with them filled in).  Plain implementations from the formulas,
independent of the library code the checks compare against.  Each function has the name the
notebook's exercise cell defines, and self-contained (imports inside the body): CI pastes its source
into the notebook cell."""
