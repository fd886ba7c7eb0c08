-- depends: 0022_langgraph_checkpoints
DROP TABLE IF EXISTS checkpoint_interrupts;
