"""Paper tables to regenerate: the YAML files beside this module (one per table), their schema
(:mod:`.schema`), running their grids (:mod:`.run`) and printing them beside the paper (:mod:`.render`)."""
