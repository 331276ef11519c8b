from fifoflow.cli import main

main()
