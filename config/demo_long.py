"""make demo: the long model M_L, trained from scratch on long step-by-step traces (plain SFT), after
config/demo_scratch.py. 1000 steps of 32 traces reach 99-100% on hard test problems (600 steps: ~90%)."""
mixture = "static"
w_short = 0.0
max_steps = 1000
global_batch = 32
save_interval = 250
