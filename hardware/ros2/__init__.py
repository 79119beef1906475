"""ROS 2 integration (imported as ``robot_rl.hardware.ros2``): the robot env node + actor, the MuJoCo twin node,
the safety layer, rosbag2 export. Importing this package never imports rclpy (only the nodes do, when run).

Executables (``lib/robot_rl/`` after ``colcon build``; ``bin/`` after ``pip install``):
``robot_rl_actor_node`` (:mod:`.actor_node`) and ``robot_rl_twin_node`` (:mod:`.twin_node`).
"""
