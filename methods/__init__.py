"""Built-in cirbench methods, installed as ``cirbench_methods``; each registers through the
``cirbench.methods`` entry-point group exactly as a third-party package would."""
