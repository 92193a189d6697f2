"""`sara demo`: every stage end to end on tiny presets and generated data, one HTML report
(:func:`sara.demo.run.run_demo`); one module per report section, the HTML builder beside them."""
