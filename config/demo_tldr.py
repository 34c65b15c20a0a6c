"""make demo: TLDR from the long model; the static 1:1 ablation runs the same with --mixture=static.
A low constant lr: at 1e-3 the static mixture lost most of its hard-problem accuracy. The weights move fast
here (System-1 can take over within 30 steps), so the dev evaluation, and the checkpoint the choice rule can
pick, come every 10 steps. The loss weighs every token the same (loss_norm = "token"), the setting the demo was
tuned with; the recipes weigh every example the same, as the official runs did."""
loss_norm = "token"
max_steps = 150
global_batch = 32
row_tokens = 1024
max_len = 1024
lr = 3e-4
lr_schedule = "constant"
warmup_steps = 10
beta2 = 0.95
eval_interval = 10
save_interval = 10
keep_checkpoints = 1
dev_max_new_tokens = 300
dev_temperature = 0.7
dev_top_p = 1.0
dev_batch_size = 64
