"""ros2 launch robot_rl real.launch.py [learner_host:=IP] [train_config:=FILE] [keys_dir:=DIR] [key_name:=NAME]

Starts robot_rl_actor_node on the robot controller: the robot env (sensors -> observations, actions -> ros2_control
commands through the safety layer) and the actor streaming to the learner. Every other parameter is in
``params_file`` (default: share/robot_rl/config/real.yaml).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# Launch arguments forwarded as node parameters on top of params_file ("" keeps the file's value).
FORWARDED = {
    "train_config": "the learner's run_dir/config_learner.yaml",
    "learner_host": "learner address (transport.host)",
    "keys_dir": "CurveZMQ keys directory (transport.keys_dir)",
    "key_name": "this robot's key name (keys/actors/<name>.key_secret)",
    "actor_id": "this robot's actor id",
}


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("robot_rl"), "config", "real.yaml"])
    arguments = [DeclareLaunchArgument("params_file", default_value=default_params,
                                       description="robot_rl_actor parameters (topics, rates, limits, QoS)")]
    arguments += [DeclareLaunchArgument(name, default_value="", description=text) for name, text in FORWARDED.items()]
    overrides = {name: LaunchConfiguration(name) for name in FORWARDED}
    actor = Node(package="robot_rl", executable="robot_rl_actor_node", name="robot_rl_actor", output="screen",
                 emulate_tty=True,
                 parameters=[LaunchConfiguration("params_file"), overrides])
    return LaunchDescription([*arguments, actor])
