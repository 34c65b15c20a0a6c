"""The paper's static 1:1 ablation (train_script/aba_mixture/max_step_system_1_2_data_1_vs_1.sh of the official
release), read after a recipe:
    torchrun --nproc_per_node=8 train.py config/r1_7b.py config/static.py --model=... --system1=... --system2=...
Constant 1:1 weights, the lr warmed up over 1% of the steps and decayed linearly to 0 (--lr_scheduler_type
linear --warmup_ratio 0.01), no dev evaluation (pass no dev=), and the final model is the one evaluated.
(`make reproduce-7b-static` runs it.) Checkpoints still come every save_interval steps, so that a killed run
resumes; the official run saved only at the end."""
mixture = "static"
w_short = 0.5
lr_schedule = "linear"
warmup_steps = 20               # Hugging Face's ceil(warmup_ratio x max_steps) = ceil(0.01 x 2000)
