from mmict_core.cli import main

main(["app"])
