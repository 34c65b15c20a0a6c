"""The 14B recipe: DeepSeek-R1-Distill-Qwen-14B compressed with TLDR. The official settings are the 7B ones but
the batch (and its gradient's scale), read from config/r1_7b.py; this file holds what differs:
    torchrun --nproc_per_node=8 train.py config/r1_14b.py --model=... --system1=... --system2=... --dev=... --bounds=...
(`make reproduce-14b` fills in the paths.) T14 = train_script/train_14B_1_vs_1/max_step_2000_eval_step_32_init_1_vs_1.sh
of the official release. The official 14B run reports step 128."""
base = "r1_7b.py"
model = "models/DeepSeek-R1-Distill-Qwen-14B"  # make reproduce-14b sets it from MODEL_DIR
global_batch = 32               # per-device 8, split_batches over 8 processes, 4 accumulation steps (T14:128,132,145)
loss_norm = "group"             # HF 4.46's token mean over each GPU's 4 accumulated sequences, averaged over GPUs
loss_group = 4
dev_batch_size = 8              # KV-cache slots per GPU: 8 x 9k tokens x 196 KB = 14 GB (the 7B takes 32)
# The official 14B gradient is 1/4 of ours: HF 4.46.3 divides each GPU's loss by its tokens over the 4 accumulation
# steps (trainer.py:3612-3633) and DeepSpeed divides it by the 4 steps once more (engine.py:1995-1996, scale_wrt_gas;
# transformers PR #35808 stopped it later). AdamW ignores a gradient's scale but through clipping and eps:
grad_clip = 4.0                 # max_grad_norm 1.0 on the quarter gradient is 4.0 on ours
eps = 4e-8                      # adam_epsilon 1e-8 on the quarter gradient is 4e-8 on ours
